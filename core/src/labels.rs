//! Labels: on containers (filters, billing reports), on hosts (the
//! operator's `SKIFF_HOST_LABELS`) and in placement constraints, one rule
//! for all, so every label a host can carry can be asked for.

use crate::FieldError;
use std::collections::BTreeMap;

/// At most this many labels on one object.
pub const MAX_LABELS: usize = 64;

/// Label keys: 1 to 63 characters of letters, digits and `-_./`.
pub fn is_label_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 63
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
}

/// One label; the error says what is wrong with it.
pub fn check_label(key: &str, value: &str) -> Result<(), &'static str> {
    if !is_label_key(key) {
        return Err("keys are 1 to 63 characters of letters, digits and -_./");
    }
    if value.len() > 256 || value.contains('\0') {
        return Err("values are at most 256 bytes without NUL");
    }
    Ok(())
}

/// A set of labels given as `field` of a request.
pub fn validate_labels(field: &str, labels: &BTreeMap<String, String>) -> Result<(), FieldError> {
    if labels.len() > MAX_LABELS {
        return Err(FieldError::new(field, "at most 64 labels"));
    }
    for (key, value) in labels {
        check_label(key, value).map_err(|m| FieldError::new(format!("{field}.{key}"), m))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_rules() {
        assert!(check_label("zone", "b").is_ok());
        assert!(check_label("a b", "1").is_err());
        assert!(check_label(&"k".repeat(64), "1").is_err());
        assert!(check_label("k", &"v".repeat(257)).is_err());
        assert!(check_label("k", "nul\0").is_err());
        let many: BTreeMap<_, _> = (0..65).map(|i| (format!("k{i}"), String::new())).collect();
        assert_eq!(
            validate_labels("labels", &many).unwrap_err().field,
            "labels"
        );
    }
}
