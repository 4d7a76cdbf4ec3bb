//! Authentication: Google ID tokens → tenant and user.

pub mod google;
