//! Card JSON for the HTTP-runtime Gmail add-on (GOOGLE.md §1), built in one place so every
//! card keeps Google's limits and every action points at docket.

use serde_json::{json, Value};

/// Google's limits: sections per card, widgets per section.
pub const MAX_SECTIONS: usize = 100;
pub const MAX_WIDGETS: usize = 100;

/// Escapes text for card fields that accept Google's limited HTML.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(max - 1).collect::<String>())
    }
}

pub struct Card {
    name: &'static str,
    title: String,
    subtitle: Option<String>,
    sections: Vec<Value>,
}

impl Card {
    pub fn new(name: &'static str, title: &str) -> Card {
        Card {
            name,
            title: title.to_string(),
            subtitle: None,
            sections: Vec::new(),
        }
    }
    pub fn subtitle(mut self, s: &str) -> Card {
        self.subtitle = Some(truncate(s, 80));
        self
    }
    pub fn section(mut self, header: Option<&str>, mut widgets: Vec<Value>) -> Card {
        if widgets.is_empty() || self.sections.len() >= MAX_SECTIONS {
            return self;
        }
        widgets.truncate(MAX_WIDGETS);
        let mut s = json!({ "widgets": widgets });
        if let Some(h) = header {
            s["header"] = json!(esc(h));
        }
        self.sections.push(s);
        self
    }
    pub fn build(self) -> Value {
        let mut header = json!({ "title": self.title });
        if let Some(s) = self.subtitle {
            header["subtitle"] = json!(s);
        }
        json!({ "name": self.name, "header": header, "sections": self.sections })
    }
}

pub fn paragraph(html: &str) -> Value {
    json!({ "textParagraph": { "text": html } })
}

/// A decorated text line: `html` is already-escaped rich text; the labels are plain text
/// (rule names, emails) and are escaped here, so no admin-chosen name becomes markup.
pub fn decorated(top: Option<&str>, html: &str, bottom: Option<&str>) -> Value {
    let mut d = json!({ "text": html, "wrapText": true });
    if let Some(t) = top {
        d["topLabel"] = json!(esc(t));
    }
    if let Some(b) = bottom {
        d["bottomLabel"] = json!(esc(b));
    }
    json!({ "decoratedText": d })
}

pub fn text_input(name: &str, label: &str, hint: Option<&str>, value: Option<&str>) -> Value {
    let mut t = json!({ "name": name, "label": label });
    if let Some(h) = hint {
        t["hintText"] = json!(h);
    }
    if let Some(v) = value {
        t["value"] = json!(v);
    }
    json!({ "textInput": t })
}

pub fn checkboxes(name: &str, label: &str, items: Vec<(String, String, bool)>) -> Value {
    let items: Vec<Value> = items
        .into_iter()
        .take(MAX_WIDGETS)
        .map(
            |(text, value, selected)| json!({ "text": text, "value": value, "selected": selected }),
        )
        .collect();
    json!({ "selectionInput": { "name": name, "label": label, "type": "CHECK_BOX", "items": items } })
}

/// A button running one of docket's actions: `function` is an absolute URL of ours.
pub fn action_button(text: &str, function: &str, params: &[(&str, &str)]) -> Value {
    let parameters: Vec<Value> = params
        .iter()
        .map(|(k, v)| json!({ "key": k, "value": v }))
        .collect();
    json!({ "text": text, "onClick": { "action": { "function": function, "parameters": parameters } } })
}

pub fn buttons(list: Vec<Value>) -> Value {
    json!({ "buttonList": { "buttons": list } })
}

pub fn push(card: Value) -> Value {
    json!({ "renderActions": { "action": { "navigations": [{ "pushCard": card }] } } })
}

pub fn update(card: Value, notification: Option<&str>) -> Value {
    let mut action = json!({ "navigations": [{ "updateCard": card }] });
    if let Some(n) = notification {
        action["notification"] = json!({ "text": n });
    }
    json!({ "renderActions": { "action": action } })
}

/// Replaces the whole card stack with `card` (nothing of what was on screen stays under it).
pub fn replace_all(card: Value) -> Value {
    json!({ "renderActions": { "action": { "navigations": [{ "popToRoot": true }, { "updateCard": card }] } } })
}

pub fn notify(text: &str) -> Value {
    json!({ "renderActions": { "action": { "notification": { "text": text } } } })
}

pub fn request_scopes(scopes: &[&str]) -> Value {
    json!({ "requesting_google_scopes": { "scopes": scopes } })
}

/// A card that explains what went wrong (never a blank sidebar).
pub fn error_card(title: &str, detail: &str, retry: Option<Value>) -> Value {
    let mut c = Card::new("error", "docket")
        .subtitle(title)
        .section(None, vec![paragraph(&esc(detail))]);
    if let Some(b) = retry {
        c = c.section(None, vec![buttons(vec![b])]);
    }
    c.build()
}
