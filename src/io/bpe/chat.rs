//! Chat templates without a Jinja engine: the template text is matched against the ChatML forms
//! we know and rendered by hand; anything else is refused by name rather than rendered wrong.
//!
//! ChatML writes each message as `<|im_start|>{role}\n{content}<|im_end|>\n` and, when a reply
//! is wanted, ends with `<|im_start|>assistant\n`. SmolLM2-Instruct's template also puts a
//! default system message first when the conversation does not start with one.

use crate::{Error, Result};

/// Opens the loop over messages.
const FOR: &str = "{% for message in messages %}";
/// SmolLM2's default system message, around its text: `{SYSTEM_OPEN}text{SYSTEM_CLOSE}`.
const SYSTEM_OPEN: &str = "{% if loop.first and messages[0]['role'] != 'system' %}\
                           {{ '<|im_start|>system\n";
const SYSTEM_CLOSE: &str = "<|im_end|>\n' }}{% endif %}";
/// One message, then the end of the loop and the generation prompt.
const MESSAGE_AND_PROMPT: &str = "{{'<|im_start|>' + message['role'] + '\n' + \
                                  message['content'] + '<|im_end|>' + '\n'}}{% endfor %}\
                                  {% if add_generation_prompt %}\
                                  {{ '<|im_start|>assistant\n' }}{% endif %}";

/// A chat template spectune can render.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum ChatTemplate {
    /// ChatML; with `default_system`, that system message goes first when the first message's
    /// role is not `system`.
    ChatMl { default_system: Option<String> },
}

impl ChatTemplate {
    /// Recognises `template`, written with newlines as characters or as Jinja's `\n` escape, with
    /// or without one trailing newline (which Hugging Face's `trim_blocks` removes).
    pub(super) fn recognise(template: &str) -> Result<Self> {
        let text = template.replace("\\n", "\n");
        let text = text.strip_suffix('\n').unwrap_or(&text);
        let body = text
            .strip_prefix(FOR)
            .and_then(|t| t.strip_suffix(MESSAGE_AND_PROMPT));
        let default_system = match body {
            Some("") => Some(None),
            Some(body) => body
                .strip_prefix(SYSTEM_OPEN)
                .and_then(|t| t.strip_suffix(SYSTEM_CLOSE))
                // Any quote or backslash left would be Jinja syntax, not text we can copy.
                .filter(|system| !system.contains(['\'', '\\']))
                .map(|system| Some(system.to_owned())),
            None => None,
        };
        match default_system {
            Some(default_system) => Ok(ChatTemplate::ChatMl { default_system }),
            None => {
                let start: String = template.chars().take(120).collect();
                let more = if start.len() < template.len() {
                    "…"
                } else {
                    ""
                };
                Err(Error::Tokenizer(format!(
                    "the chat template is not a ChatML template spectune can render \
                     (no Jinja engine here): {start:?}{more}"
                )))
            }
        }
    }

    /// The prompt text for `messages`, exactly as the template would render it.
    pub(super) fn render<R: AsRef<str>, C: AsRef<str>>(
        &self,
        messages: &[(R, C)],
        add_generation_prompt: bool,
    ) -> String {
        let ChatTemplate::ChatMl { default_system } = self;
        let mut out = String::new();
        let mut message = |role: &str, content: &str| {
            out.push_str("<|im_start|>");
            out.push_str(role);
            out.push('\n');
            out.push_str(content);
            out.push_str("<|im_end|>\n");
        };
        if let (Some(system), Some((role, _))) = (default_system, messages.first()) {
            if role.as_ref() != "system" {
                message("system", system);
            }
        }
        for (role, content) in messages {
            message(role.as_ref(), content.as_ref());
        }
        if add_generation_prompt {
            out.push_str("<|im_start|>assistant\n");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMOLLM2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] \
        != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, \
        trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + \
        '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt \
        %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn smollm2_template_is_chatml_with_a_default_system_message() {
        let system = "You are a helpful AI assistant named SmolLM, trained by Hugging Face";
        let want = ChatTemplate::ChatMl {
            default_system: Some(system.into()),
        };
        assert_eq!(ChatTemplate::recognise(SMOLLM2).unwrap(), want);
        let escaped = SMOLLM2.replace('\n', "\\n") + "\n";
        assert_eq!(ChatTemplate::recognise(&escaped).unwrap(), want);
        let t = &want;
        assert_eq!(
            t.render(&[("user", "Hi")], true),
            format!(
                "<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n\
                 <|im_start|>assistant\n"
            )
        );
        assert_eq!(
            t.render(&[("system", "Be brief."), ("user", "Hi")], false),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        );
        let none: [(&str, &str); 0] = [];
        assert_eq!(t.render(&none, true), "<|im_start|>assistant\n");
        assert_eq!(t.render(&none, false), "");
    }

    #[test]
    fn plain_chatml_is_recognised() {
        let plain = format!("{FOR}{MESSAGE_AND_PROMPT}");
        let t = ChatTemplate::recognise(&plain).unwrap();
        assert_eq!(
            t,
            ChatTemplate::ChatMl {
                default_system: None
            }
        );
        assert_eq!(
            t.render(&[("user", "Hi")], false),
            "<|im_start|>user\nHi<|im_end|>\n"
        );
    }

    #[test]
    fn other_templates_are_refused_by_name() {
        let llama3 = "{% set loop_messages = messages %}{% for message in loop_messages %}\
                      {{ '<|start_header_id|>' + message['role'] }}{% endfor %}";
        let quoted = SMOLLM2.replace("named SmolLM", "named 'SmolLM'");
        for bad in [llama3, "", "{% for message in messages %}", &quoted] {
            let Err(Error::Tokenizer(msg)) = ChatTemplate::recognise(bad) else {
                panic!("{bad:?} was accepted");
            };
            assert!(msg.contains("not a ChatML template"), "{msg}");
            assert!(
                msg.contains(&bad.chars().take(20).collect::<String>()),
                "{msg}"
            );
        }
    }
}
