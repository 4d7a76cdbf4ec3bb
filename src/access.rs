//! Record visibility: teams, firm-wide records and ethical walls (being written).
