//! Routing rules (being written).
