-- An entity's audit entries by id: the console's audit filter (`?subject=`), and the undo of a
-- filing (src/filing/remove.rs), which asks whether anyone else was told the filing exists
-- (`filing.duplicate` entries of that filing).
CREATE INDEX audit_log_subject ON audit_log (subject, action);
