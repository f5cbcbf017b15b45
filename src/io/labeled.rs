//! Labelled texts, and the sentiment data sets' JSON (npm `sentiment` 5.0.2's
//! `test/fixtures/{amazon,yelp,imdb}.json`: the UCI Sentiment Labelled Sentences, CC BY 4.0,
//! Kotzias et al. 2015): an array of `{"text": …, "class": 0 | 1}`.

use serde_json::Value;

use crate::error::{Error, Result};

/// A text and its class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabeledText {
    pub text: String,
    pub label: u32,
}

/// Parses a JSON array of `{"text", "class"}` objects. Entries with an empty text and no class
/// (each fixture ends with one) are dropped; any other entry without a text or with a class
/// that is not a whole number is an error naming its index.
pub fn parse_labeled_json(what: &'static str, bytes: &[u8]) -> Result<Vec<LabeledText>> {
    let bad = |detail: String| Error::BadFile { what, detail };
    let value: Value = serde_json::from_slice(bytes).map_err(|e| bad(format!("not JSON: {e}")))?;
    let items = value
        .as_array()
        .ok_or_else(|| bad("expected an array of {\"text\", \"class\"} objects".into()))?;
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let text = item["text"]
            .as_str()
            .ok_or_else(|| bad(format!("entry {i} has no text")))?;
        match item["class"].as_u64() {
            Some(c) if !text.trim().is_empty() => out.push(LabeledText {
                text: text.to_string(),
                label: u32::try_from(c)
                    .map_err(|_| bad(format!("entry {i}: class {c} is too large")))?,
            }),
            None if text.trim().is_empty() && item["class"].is_null() => {}
            _ => {
                return Err(bad(format!(
                    "entry {i} needs a non-empty text and a whole-number class, got {item}"
                )))
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixtures_parse_and_bad_entries_are_named() {
        let ok = parse_labeled_json("data", br#"[{"text": "Great!", "class": 1}, {"text": "Meh.", "class": 0}, {"text": "", "class": null}]"#).unwrap();
        assert_eq!(
            ok,
            vec![
                LabeledText {
                    text: "Great!".into(),
                    label: 1
                },
                LabeledText {
                    text: "Meh.".into(),
                    label: 0
                }
            ]
        );
        for bad in [
            &br#"{"text": "x"}"#[..],
            br#"[{"text": "x"}]"#,
            br#"[{"text": "", "class": 1}]"#,
            br#"[{"class": 1}]"#,
            b"[{",
        ] {
            assert!(
                matches!(
                    parse_labeled_json("data", bad),
                    Err(Error::BadFile { what: "data", .. })
                ),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
