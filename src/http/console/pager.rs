//! Pages of a console list: `?page=N` (1-based), [`SIZE`] rows a page, with links to the
//! previous and next page that keep the list's other query parameters (its filters).

/// Rows on one page of a console list.
pub const SIZE: usize = 50;

/// Where a list is: its rows shown, and the links around them.
#[derive(Debug, Clone, Default)]
pub struct Pager {
    /// 1-based.
    pub page: usize,
    /// 1-based positions of the first and last row shown, and how many there are.
    pub first: usize,
    pub last: usize,
    pub total: usize,
    pub prev_href: Option<String>,
    pub next_href: Option<String>,
}

impl Pager {
    /// The rows of page `page` of `rows` (a page past the end shows the last one), and the
    /// pager for `path` whose links keep `params` (empty ones are left out).
    pub fn slice<T>(
        rows: Vec<T>,
        page: Option<usize>,
        path: &str,
        params: &[(&str, &str)],
    ) -> (Vec<T>, Pager) {
        let total = rows.len();
        let pages = total.div_ceil(SIZE).max(1);
        let page = page.unwrap_or(1).clamp(1, pages);
        let href = |p: usize| {
            let mut q: Vec<(&str, String)> = params
                .iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, v)| (*k, v.to_string()))
                .collect();
            if p > 1 {
                q.push(("page", p.to_string()));
            }
            match serde_urlencoded::to_string(&q).unwrap_or_default() {
                s if s.is_empty() => path.to_string(),
                s => format!("{path}?{s}"),
            }
        };
        let start = (page - 1) * SIZE;
        let shown: Vec<T> = rows.into_iter().skip(start).take(SIZE).collect();
        let pager = Pager {
            page,
            first: if total == 0 { 0 } else { start + 1 },
            last: start + shown.len(),
            total,
            prev_href: (page > 1).then(|| href(page - 1)),
            next_href: (page < pages).then(|| href(page + 1)),
        };
        (shown, pager)
    }

    /// Whether there is more than one page (the template shows the links then).
    pub fn paged(&self) -> bool {
        self.prev_href.is_some() || self.next_href.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_keep_the_filters_and_stop_at_the_ends() {
        let rows: Vec<usize> = (0..120).collect();
        let (shown, p) = Pager::slice(rows.clone(), None, "/console/users", &[("q", "a b")]);
        assert_eq!((shown.len(), p.first, p.last, p.total), (50, 1, 50, 120));
        assert_eq!(p.prev_href, None);
        assert_eq!(p.next_href.as_deref(), Some("/console/users?q=a+b&page=2"));
        let (shown, p) = Pager::slice(rows.clone(), Some(3), "/x", &[("q", "")]);
        assert_eq!(
            (shown[0], shown.len(), p.first, p.last),
            (100, 20, 101, 120)
        );
        assert_eq!(p.prev_href.as_deref(), Some("/x?page=2"));
        assert_eq!(p.next_href, None);
        let (_, p) = Pager::slice(rows, Some(99), "/x", &[]);
        assert_eq!(p.page, 3, "past the end shows the last page");
        assert_eq!(p.prev_href.as_deref(), Some("/x?page=2"));
        let (_, p) = Pager::slice(Vec::<u8>::new(), Some(2), "/x", &[]);
        assert_eq!((p.page, p.first, p.last, p.paged()), (1, 0, 0, false));
        let (_, p) = Pager::slice(vec![1], Some(1), "/x", &[]);
        assert_eq!(
            p.prev_href.as_deref(),
            None,
            "page 1 links to the bare path"
        );
    }
}
