//! Prompt template files (`run --template F`): the user message of every question written as
//! text with placeholders, in the syntax of lm-evaluation-harness's `doc_to_text`, so a task's
//! prompt can be copied from its YAML:
//!
//! - `{{question}}`, `{{context}}`, `{{category}}`, `{{id}}`: the question's fields (an absent
//!   context or category is empty text);
//! - `{{A}}` … `{{Z}}`: the choice with that letter; `{{choices}}`: every choice on its own line
//!   as `A. text`;
//! - `{{name.strip()}}`: the same without leading and trailing white space;
//! - `{% if name %}…{% else %}…{% endif %}`: text used only when the field is not empty.
//!
//! The file's last line break is not part of the prompt (a file ends with one; prompts such as
//! KMMLU's end with `정답：`). A template is checked when it is read, and against every question
//! before anything is written, so a mistake is an input error naming the file and its line.

pub use crate::config::TemplateRecord;
use crate::dataset::Question;
use crate::error::{usage, Result};
use std::path::Path;

/// Names a placeholder may use besides the letters A–Z.
const FIELDS: [&str; 5] = ["question", "context", "category", "id", "choices"];

/// A parsed template.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptTemplate {
    nodes: Vec<Node>,
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Text(String),
    Field {
        name: String,
        strip: bool,
    },
    If {
        name: String,
        then: Vec<Node>,
        otherwise: Vec<Node>,
    },
}

/// Read `--template FILE`: its text (last line break dropped) with its sha256, checked.
pub fn load(path: &Path) -> Result<TemplateRecord> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        usage(format!(
            "--template {} cannot be read ({e}); check the path (the file must be UTF-8)",
            path.display()
        ))
    })?;
    let text = text
        .strip_suffix("\r\n")
        .or_else(|| text.strip_suffix('\n'))
        .unwrap_or(&text)
        .to_string();
    PromptTemplate::parse(&text)
        .map_err(|(line, reason)| usage(format!("{}:{line}: {reason}", path.display())))?;
    Ok(TemplateRecord {
        sha256: crate::dataset::hex_sha256(text.as_bytes()),
        text,
    })
}

impl PromptTemplate {
    /// Parse template text; the error is the 1-based line and the reason.
    pub fn parse(text: &str) -> std::result::Result<PromptTemplate, (usize, String)> {
        let mut parser = Parser { text, at: 0 };
        let (nodes, end) = parser.nodes()?;
        match end {
            None => Ok(PromptTemplate { nodes }),
            Some((tag, at)) => Err((
                line_of(text, at),
                format!("{{% {tag} %}} without {{% if %}}"),
            )),
        }
    }

    /// The user message for `question`, or why this question cannot fill the template (a
    /// choice letter or `{{choices}}` it does not have).
    pub fn render(&self, question: &Question) -> std::result::Result<String, String> {
        let mut out = String::new();
        render_nodes(&self.nodes, question, &mut out)?;
        Ok(out)
    }
}

fn render_nodes(
    nodes: &[Node],
    question: &Question,
    out: &mut String,
) -> std::result::Result<(), String> {
    for node in nodes {
        match node {
            Node::Text(text) => out.push_str(text),
            Node::Field { name, strip } => {
                let value = field(question, name)?;
                out.push_str(if *strip { value.trim() } else { &value });
            }
            Node::If {
                name,
                then,
                otherwise,
            } => {
                let set = field(question, name).is_ok_and(|v| !v.trim().is_empty());
                render_nodes(if set { then } else { otherwise }, question, out)?;
            }
        }
    }
    Ok(())
}

/// The text of one placeholder for `question`.
fn field(question: &Question, name: &str) -> std::result::Result<String, String> {
    let choices = question.choices.as_deref().unwrap_or_default();
    match name {
        "question" => Ok(question.question.clone()),
        "context" => Ok(question.context.clone().unwrap_or_default()),
        "category" => Ok(question.category.clone().unwrap_or_default()),
        "id" => Ok(question.id.clone()),
        "choices" if choices.is_empty() => {
            Err("the template lists {{choices}}, but this question has none".into())
        }
        "choices" => Ok(choices
            .iter()
            .zip('A'..='Z')
            .map(|(choice, letter)| format!("{letter}. {choice}"))
            .collect::<Vec<_>>()
            .join("\n")),
        letter => {
            let index = letter_of(letter).unwrap_or(usize::MAX);
            choices.get(index).cloned().ok_or_else(|| {
                format!(
                    "the template uses {{{{{letter}}}}}, but this question has {} choices",
                    choices.len()
                )
            })
        }
    }
}

fn letter_of(name: &str) -> Option<usize> {
    let mut chars = name.chars();
    let c = chars.next()?;
    (chars.next().is_none() && c.is_ascii_uppercase()).then(|| c as usize - 'A' as usize)
}

fn line_of(text: &str, at: usize) -> usize {
    text[..at].matches('\n').count() + 1
}

/// A recursive-descent parser over the template text; `at` is a byte offset.
struct Parser<'a> {
    text: &'a str,
    at: usize,
}

/// Nodes up to an `else`/`endif` tag (returned with its offset) or the end (`None`).
type Parsed = (Vec<Node>, Option<(&'static str, usize)>);

impl<'a> Parser<'a> {
    fn nodes(&mut self) -> std::result::Result<Parsed, (usize, String)> {
        let mut nodes = Vec::new();
        loop {
            let text = self.text;
            let rest = &text[self.at..];
            let next = [rest.find("{{"), rest.find("{%")]
                .into_iter()
                .flatten()
                .min();
            let Some(offset) = next else {
                if !rest.is_empty() {
                    nodes.push(Node::Text(rest.to_string()));
                }
                self.at = self.text.len();
                return Ok((nodes, None));
            };
            if offset > 0 {
                nodes.push(Node::Text(rest[..offset].to_string()));
            }
            let start = self.at + offset;
            let (close, body) = self.tag(start)?;
            self.at = start + close;
            if rest[offset..].starts_with("{{") {
                nodes.push(placeholder(body).map_err(|r| (line_of(self.text, start), r))?);
                continue;
            }
            match body.split_whitespace().collect::<Vec<_>>().as_slice() {
                ["if", name] => nodes.push(self.conditional(name, start)?),
                ["else"] => return Ok((nodes, Some(("else", start)))),
                ["endif"] => return Ok((nodes, Some(("endif", start)))),
                _ => {
                    return Err((
                        line_of(self.text, start),
                        format!("unknown tag {{% {} %}}; use {{% if name %}}, {{% else %}} and {{% endif %}}", body.trim()),
                    ))
                }
            }
        }
    }

    /// The tag opening at `start` (`{{…}}` or `{%…%}`): its length and its inner text.
    fn tag(&self, start: usize) -> std::result::Result<(usize, &'a str), (usize, String)> {
        let text = self.text;
        let rest = &text[start..];
        let closing = if rest.starts_with("{{") { "}}" } else { "%}" };
        let end = rest.find(closing).ok_or_else(|| {
            (
                line_of(self.text, start),
                format!("{} is never closed with {closing}", &rest[..2]),
            )
        })?;
        Ok((end + 2, &rest[2..end]))
    }

    /// `{% if name %}` … `{% else %}` … `{% endif %}` after its opening tag.
    fn conditional(
        &mut self,
        name: &str,
        start: usize,
    ) -> std::result::Result<Node, (usize, String)> {
        check_name(name).map_err(|r| (line_of(self.text, start), r))?;
        let unclosed = || {
            (
                line_of(self.text, start),
                format!("{{% if {name} %}} is never closed with {{% endif %}}"),
            )
        };
        let (then, end) = self.nodes()?;
        let otherwise = match end {
            None => return Err(unclosed()),
            Some(("endif", _)) => Vec::new(),
            Some(_) => match self.nodes()? {
                (otherwise, Some(("endif", _))) => otherwise,
                (_, Some((_, at))) => {
                    return Err((
                        line_of(self.text, at),
                        "a second {% else %} in one {% if %}".into(),
                    ))
                }
                (_, None) => return Err(unclosed()),
            },
        };
        Ok(Node::If {
            name: name.to_string(),
            then,
            otherwise,
        })
    }
}

/// `{{ name }}` or `{{ name.strip() }}`.
fn placeholder(body: &str) -> std::result::Result<Node, String> {
    let body = body.trim();
    let (name, strip) = match body.strip_suffix(".strip()") {
        Some(name) => (name.trim_end(), true),
        None => (body, false),
    };
    check_name(name)?;
    Ok(Node::Field {
        name: name.to_string(),
        strip,
    })
}

fn check_name(name: &str) -> std::result::Result<(), String> {
    if FIELDS.contains(&name) || letter_of(name).is_some() {
        return Ok(());
    }
    Err(format!(
        "unknown placeholder {{{{{name}}}}}; use {}, a choice letter A–Z, or name.strip()",
        FIELDS.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KMMLU: &str = "{{question.strip()}}\nA. {{A}}\nB. {{B}}\nC. {{C}}\nD. {{D}}\n정답：";

    fn question() -> Question {
        Question {
            id: "q1".into(),
            question: "  다음 중 옳은 것은?\n".into(),
            choices: Some(vec!["가".into(), "나".into(), "다".into(), "라".into()]),
            category: Some("law".into()),
            ..Default::default()
        }
    }

    #[test]
    fn kmmlu_prompt_as_lm_evaluation_harness_renders_it() {
        let template = PromptTemplate::parse(KMMLU).unwrap();
        assert_eq!(
            template.render(&question()).unwrap(),
            "다음 중 옳은 것은?\nA. 가\nB. 나\nC. 다\nD. 라\n정답："
        );
        let listed =
            PromptTemplate::parse("{{ question }}|{{choices}}|{{category}}|{{id}}").unwrap();
        assert_eq!(
            listed.render(&question()).unwrap(),
            "  다음 중 옳은 것은?\n|A. 가\nB. 나\nC. 다\nD. 라|law|q1"
        );
    }

    #[test]
    fn conditionals_follow_the_field() {
        let text = "{% if context %}맥락: {{context}}\n{% else %}(없음)\n{% endif %}질문: {{question.strip()}}";
        let template = PromptTemplate::parse(text).unwrap();
        assert_eq!(
            template.render(&question()).unwrap(),
            "(없음)\n질문: 다음 중 옳은 것은?"
        );
        let with_context = Question {
            context: Some("지문".into()),
            ..question()
        };
        assert_eq!(
            template.render(&with_context).unwrap(),
            "맥락: 지문\n질문: 다음 중 옳은 것은?"
        );
        let nested = PromptTemplate::parse(
            "{% if category %}[{% if context %}c{% endif %}{{category}}]{% endif %}",
        )
        .unwrap();
        assert_eq!(nested.render(&question()).unwrap(), "[law]");
    }

    #[test]
    fn a_question_without_the_letter_is_refused_with_the_reason() {
        let template = PromptTemplate::parse("{{question}} {{E}}").unwrap();
        let reason = template.render(&question()).unwrap_err();
        assert!(
            reason.contains("uses {{E}}, but this question has 4 choices"),
            "{reason}"
        );
        let free = Question {
            choices: None,
            ..question()
        };
        let listed = PromptTemplate::parse("{{choices}}").unwrap();
        assert!(listed.render(&free).unwrap_err().contains("has none"));
    }

    #[test]
    fn every_syntax_mistake_names_its_line() {
        let cases = [
            ("a\n{{qustion}}", 2, "unknown placeholder {{qustion}}"),
            ("{{question", 1, "{{ is never closed with }}"),
            (
                "x\n\n{% if context %}a",
                3,
                "{% if context %} is never closed",
            ),
            ("{% endif %}", 1, "{% endif %} without {% if %}"),
            ("{% for x in y %}", 1, "unknown tag {% for x in y %}"),
            (
                "{{question.upper()}}",
                1,
                "unknown placeholder {{question.upper()}}",
            ),
            ("{% if ctx %}{% endif %}", 1, "unknown placeholder {{ctx}}"),
            (
                "{% if id %}{% else %}{% else %}{% endif %}",
                1,
                "a second {% else %}",
            ),
        ];
        for (text, line, expected) in cases {
            let (found_line, reason) = PromptTemplate::parse(text).unwrap_err();
            assert_eq!(found_line, line, "{text}: {reason}");
            assert!(reason.contains(expected), "{text}: {reason}");
        }
    }

    #[test]
    fn load_drops_the_last_line_break_and_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kmmlu.txt");
        std::fs::write(&path, format!("{KMMLU}\n")).unwrap();
        let record = load(&path).unwrap();
        assert_eq!(record.text, KMMLU);
        assert_eq!(record.sha256, crate::dataset::hex_sha256(KMMLU.as_bytes()));
        std::fs::write(&path, "ok\n{{answer}}\n").unwrap();
        let message = load(&path).unwrap_err().to_string();
        assert!(
            message.starts_with(&format!(
                "{}:2: unknown placeholder {{{{answer}}}}",
                path.display()
            )),
            "{message}"
        );
    }
}
