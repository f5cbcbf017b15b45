//! A small BERT tokenizer.json written here, for tests that need a WordPiece tokenizer and no
//! downloaded files (native and browser tests alike).

/// A BERT-style (uncased WordPiece) tokenizer.json whose vocabulary is `[PAD]` `[UNK]` `[CLS]`
/// `[SEP]` (ids 0 to 3), then `words` in order.
pub fn wordpiece_json(words: &[&str]) -> String {
    let specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"];
    let vocab: Vec<String> = specials
        .iter()
        .chain(words)
        .enumerate()
        .map(|(i, w)| format!("\"{w}\": {i}"))
        .collect();
    let added: Vec<String> = specials
        .iter()
        .enumerate()
        .map(|(i, w)| {
            format!(
                r#"{{"id": {i}, "content": "{w}", "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": true}}"#
            )
        })
        .collect();
    format!(
        r###"{{
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [{}],
        "normalizer": {{"type": "BertNormalizer", "clean_text": true,
            "handle_chinese_chars": true, "strip_accents": null, "lowercase": true}},
        "pre_tokenizer": {{"type": "BertPreTokenizer"}},
        "post_processor": {{"type": "BertProcessing", "sep": ["[SEP]", 3], "cls": ["[CLS]", 2]}},
        "decoder": null,
        "model": {{"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
            "max_input_chars_per_word": 100, "vocab": {{{}}}}}
    }}"###,
        added.join(", "),
        vocab.join(", ")
    )
}
