//! SONiC's database names, numbers and key separators, in one place.
//!
//! These are the standard values of `database_config.json` (sonic-buildimage's
//! `docker-database/database_config.json.j2`); a switch's own file wins where it is read.

/// `(name, id, separator)` of every standard SONiC database.
pub const STANDARD_DATABASES: &[(&str, u8, char)] = &[
    ("APPL_DB", 0, ':'),
    ("ASIC_DB", 1, ':'),
    ("COUNTERS_DB", 2, ':'),
    ("LOGLEVEL_DB", 3, ':'),
    ("CONFIG_DB", 4, '|'),
    ("PFC_WD_DB", 5, ':'),
    ("FLEX_COUNTER_DB", 5, ':'),
    ("STATE_DB", 6, '|'),
    ("SNMP_OVERLAY_DB", 7, '|'),
    ("RESTAPI_DB", 8, '|'),
    ("GB_ASIC_DB", 9, ':'),
    ("GB_COUNTERS_DB", 10, ':'),
    ("GB_FLEX_COUNTER_DB", 11, ':'),
    ("CHASSIS_APP_DB", 12, '|'),
    ("CHASSIS_STATE_DB", 13, '|'),
    ("APPL_STATE_DB", 14, ':'),
    ("DPU_APPL_DB", 15, ':'),
    ("DPU_APPL_STATE_DB", 16, '|'),
    ("DPU_STATE_DB", 17, '|'),
    ("DPU_COUNTERS_DB", 18, ':'),
    ("EVENT_DB", 19, '|'),
    ("BMP_STATE_DB", 20, '|'),
];

/// The standard id of a database name, if it is one.
pub fn standard_db_id(name: &str) -> Option<u8> {
    STANDARD_DATABASES.iter().find(|(n, _, _)| *n == name).map(|(_, id, _)| *id)
}

/// A database given by name or by number, as operators type it.
pub fn resolve_db(name_or_id: &str) -> Option<u8> {
    match name_or_id.parse::<u8>() {
        Ok(id) if id < 100 => Some(id),
        Ok(_) => None,
        Err(_) => standard_db_id(name_or_id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers_resolve() {
        assert_eq!(resolve_db("CONFIG_DB"), Some(4));
        assert_eq!(resolve_db("6"), Some(6));
        assert_eq!(resolve_db("100"), None);
        assert_eq!(resolve_db("NOPE_DB"), None);
    }
}
