"""Understanding each patient: adherence (PDC / MPR) today; traits, tags and segments as they land."""
