//! Prompt template files (`run --template F`): the user message of every question written as
//! text with placeholders, in the syntax of lm-evaluation-harness's `doc_to_text`, so a task's
//! prompt can be copied from its YAML:
//!
//! - `{{question}}`, `{{context}}`, `{{category}}`, `{{id}}`: the question's fields (an absent
//!   context or category is empty text);
//! - `{{A}}` … `{{Z}}`: the choice with that letter; `{{choices}}`: every choice on its own line
//!   as `A. text`, labelled past `Z` as `AA`, `AB`, … ([`super::choice_label`]);
//! - `{{name.strip()}}`: the same without leading and trailing white space;
//! - `{% if name %}…{% else %}…{% endif %}`: text used only when the field is not empty.
//!
//! The file's last line break is not part of the prompt (a file ends with one; prompts such as
//! KMMLU's end with `정답：`). A template is checked when it is read, and against every question
//! before anything is written, so a mistake is an input error naming the file and its line.
//!
//! A template is bounded: at most [`MAX_TEMPLATE_BYTES`] of text, `{% if %}` nested at most
//! [`MAX_IF_DEPTH`] deep, and a rendered prompt of at most [`MAX_RENDERED_BYTES`]. Parsing and
//! rendering take time linear in the template and the prompt.

pub use crate::config::TemplateRecord;
use crate::dataset::Question;
use crate::error::{usage, Result};
use std::io::Read;
use std::path::Path;

/// Most bytes of template text: a benchmark's prompt is a few hundred bytes; this leaves room
/// for a long few-shot prompt written out by hand.
pub const MAX_TEMPLATE_BYTES: usize = 1 << 20;

/// Deepest nesting of `{% if %}`: real templates nest one or two deep. The bound keeps the
/// recursive parser, renderer and drop within a small stack.
pub const MAX_IF_DEPTH: usize = 32;

/// Largest rendered prompt: far more text than any model's context holds (a few bytes a token),
/// far less than a template repeating a long passage thousands of times would ask for.
pub const MAX_RENDERED_BYTES: usize = 16 << 20;

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
    let unreadable = |e: std::io::Error| {
        usage(format!(
            "--template {} cannot be read ({e}); check the path (the file must be UTF-8)",
            path.display()
        ))
    };
    // Past the limit and a last line break (\r\n), one more byte tells that the file is too long.
    let most = MAX_TEMPLATE_BYTES + 2;
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(most as u64 + 1).read_to_end(&mut bytes))
        .map_err(unreadable)?;
    if bytes.len() > most {
        return Err(usage(format!(
            "--template {} is longer than {MAX_TEMPLATE_BYTES} bytes; a prompt template is a few hundred bytes",
            path.display()
        )));
    }
    let text = String::from_utf8(bytes)
        .map_err(|e| unreadable(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
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
        if text.len() > MAX_TEMPLATE_BYTES {
            return Err((
                line_of(text, MAX_TEMPLATE_BYTES),
                format!(
                    "the template is longer than {MAX_TEMPLATE_BYTES} bytes; a prompt template is a few hundred bytes"
                ),
            ));
        }
        let mut parser = Parser {
            text,
            at: 0,
            depth: 0,
        };
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
        if out.len() > MAX_RENDERED_BYTES {
            return Err(too_long(out.len()));
        }
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
                // Checked as it grows, so a template cannot make a prompt of gigabytes first.
                if out.len() > MAX_RENDERED_BYTES {
                    return Err(too_long(out.len()));
                }
            }
            Node::If {
                name,
                then,
                otherwise,
            } => {
                let branch = if is_set(question, name) {
                    then
                } else {
                    otherwise
                };
                render_nodes(branch, question, out)?;
            }
        }
    }
    Ok(())
}

fn too_long(bytes: usize) -> String {
    format!(
        "the template makes a prompt of at least {bytes} bytes, more than the {MAX_RENDERED_BYTES} bytes a prompt may have; repeat long fields less often"
    )
}

/// Whether the field is not empty, without building its text: a template testing a long field
/// thousands of times costs nothing per test.
fn is_set(question: &Question, name: &str) -> bool {
    let filled = |text: Option<&String>| text.is_some_and(|t| !t.trim().is_empty());
    let choices = question.choices.as_deref().unwrap_or_default();
    match name {
        "question" => filled(Some(&question.question)),
        "context" => filled(question.context.as_ref()),
        "category" => filled(question.category.as_ref()),
        "id" => filled(Some(&question.id)),
        "choices" => !choices.is_empty(),
        letter => filled(letter_of(letter).and_then(|index| choices.get(index))),
    }
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
            .enumerate()
            .map(|(index, choice)| format!("{}. {choice}", super::choice_label(index)))
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
    let before = &text.as_bytes()[..at.min(text.len())];
    before.iter().filter(|&&b| b == b'\n').count() + 1
}

/// A recursive-descent parser over the template text; `at` is a byte offset, `depth` the
/// `{% if %}` tags open around it.
struct Parser<'a> {
    text: &'a str,
    at: usize,
    depth: usize,
}

/// Nodes up to an `else`/`endif` tag (returned with its offset) or the end (`None`).
type Parsed = (Vec<Node>, Option<(&'static str, usize)>);

impl<'a> Parser<'a> {
    fn nodes(&mut self) -> std::result::Result<Parsed, (usize, String)> {
        let mut nodes = Vec::new();
        loop {
            let text = self.text;
            let rest = &text[self.at..];
            // One scan for either opening, from where the last tag ended: searching for `{{` and
            // `{%` separately would scan to the end for the one that is absent at every tag.
            let next = rest
                .match_indices('{')
                .map(|(offset, _)| offset)
                .find(|&offset| matches!(rest.as_bytes().get(offset + 1), Some(b'{' | b'%')));
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
        // The closing is looked for after the opening: in `{%}` the `%}` overlaps the `{%`.
        let body = rest.get(2..).unwrap_or_default();
        let end = body.find(closing).ok_or_else(|| {
            (
                line_of(self.text, start),
                format!("{} is never closed with {closing}", &rest[..2]),
            )
        })?;
        Ok((end + 4, &body[..end]))
    }

    /// `{% if name %}` … `{% else %}` … `{% endif %}` after its opening tag.
    fn conditional(
        &mut self,
        name: &str,
        start: usize,
    ) -> std::result::Result<Node, (usize, String)> {
        check_name(name).map_err(|r| (line_of(self.text, start), r))?;
        if self.depth == MAX_IF_DEPTH {
            return Err((
                line_of(self.text, start),
                format!("{{% if {name} %}} is nested more than {MAX_IF_DEPTH} deep; flatten the conditions"),
            ));
        }
        self.depth += 1;
        let node = self.conditional_body(name, start);
        self.depth -= 1;
        node
    }

    /// The branches of an `{% if %}` whose depth is counted.
    fn conditional_body(
        &mut self,
        name: &str,
        start: usize,
    ) -> std::result::Result<Node, (usize, String)> {
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
            ("a\n{%}", 2, "{% is never closed with %}"),
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
    fn choices_past_z_are_all_listed_with_two_letter_labels() {
        let thirty = Question {
            choices: Some((1..=30).map(|n| format!("c{n}")).collect()),
            ..question()
        };
        let listed = PromptTemplate::parse("{{choices}}").unwrap();
        let rendered = listed.render(&thirty).unwrap();
        let lines: Vec<&str> = rendered.lines().collect();
        assert_eq!(lines.len(), 30, "{rendered}");
        assert_eq!(lines[25], "Z. c26");
        assert_eq!(lines[26], "AA. c27");
        assert_eq!(lines[28], "AC. c29");
        assert_eq!(lines[29], "AD. c30");
    }

    #[test]
    fn a_deep_nest_is_refused_with_its_line_not_a_crash() {
        // 100,000 openings within the size limit; the parser stops at the first one too deep.
        let deep = "{%if id%}\n".repeat(100_000);
        let (line, reason) = PromptTemplate::parse(&deep).unwrap_err();
        assert_eq!(line, MAX_IF_DEPTH + 1);
        assert!(
            reason.contains(&format!("nested more than {MAX_IF_DEPTH} deep")),
            "{reason}"
        );
        let deepest = format!(
            "{}x{}",
            "{% if id %}".repeat(MAX_IF_DEPTH),
            "{% endif %}".repeat(MAX_IF_DEPTH)
        );
        let template = PromptTemplate::parse(&deepest).unwrap();
        assert_eq!(template.render(&question()).unwrap(), "x");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deep.txt");
        std::fs::write(&path, &deep).unwrap();
        let message = load(&path).unwrap_err().to_string();
        assert!(
            message.starts_with(&format!("{}:{}: ", path.display(), MAX_IF_DEPTH + 1)),
            "{message}"
        );
    }

    #[test]
    fn eighty_thousand_placeholders_parse_and_render() {
        let count = 80_000;
        let text = "{{A}},{{id}}\n".repeat(count / 2);
        let started = std::time::Instant::now();
        let template = PromptTemplate::parse(&text).unwrap();
        let rendered = template.render(&question()).unwrap();
        eprintln!(
            "{count} placeholders parsed and rendered in {:?}",
            started.elapsed()
        );
        assert_eq!(rendered, "가,q1\n".repeat(count / 2));
    }

    #[test]
    fn a_template_or_a_prompt_past_its_limit_is_refused() {
        let long = "x".repeat(MAX_TEMPLATE_BYTES + 1);
        let (_, reason) = PromptTemplate::parse(&long).unwrap_err();
        assert!(reason.contains("longer than"), "{reason}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("long.txt");
        std::fs::write(&path, "x".repeat(MAX_TEMPLATE_BYTES + 100)).unwrap();
        let message = load(&path).unwrap_err().to_string();
        assert!(
            message.starts_with(&format!("--template {} is longer than", path.display())),
            "{message}"
        );
        std::fs::write(&path, format!("{}\n", "x".repeat(MAX_TEMPLATE_BYTES))).unwrap();
        assert_eq!(load(&path).unwrap().text.len(), MAX_TEMPLATE_BYTES);
        let passage = Question {
            context: Some("p".repeat(1 << 20)),
            ..question()
        };
        let repeated = PromptTemplate::parse(&"{{context}}".repeat(17)).unwrap();
        let reason = repeated.render(&passage).unwrap_err();
        assert!(reason.contains("a prompt may have"), "{reason}");
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

    mod property {
        //! Templates assembled from the syntax's pieces and arbitrary text: parsing never panics
        //! or overflows the stack, and either fails with a line inside the text and a reason, or
        //! gives a template whose rendering for any question is a prompt or a reason. Each case
        //! is at most a few hundred KB, so time and memory per case are bounded.

        use super::*;
        use crate::alloc_probe::{largest_allocation, property_config, PARSE_ALLOCATION_LIMIT};
        use proptest::prelude::*;
        use proptest::test_runner::{TestCaseError, TestRunner};

        fn piece() -> impl Strategy<Value = String> {
            prop_oneof![
                prop::sample::select(vec![
                    "{{",
                    "}}",
                    "{%",
                    "%}",
                    "{",
                    "}",
                    "%",
                    " if ",
                    "else",
                    "endif",
                    ".strip()",
                    "\n",
                    "\r\n",
                    " ",
                    "question",
                    "context",
                    "category",
                    "id",
                    "choices",
                    "A",
                    "D",
                    "Z",
                    "AA",
                    "answer",
                    "{% if context %}",
                    "{% else %}",
                    "{% endif %}",
                    "{{choices}}",
                    "{{ question.strip() }}",
                    "{{E}}",
                    "\u{0}",
                    "정답：",
                ])
                .prop_map(String::from),
                (1usize..80).prop_map(|n| "{% if id %}".repeat(n)),
                (1usize..80).prop_map(|n| "{% endif %}".repeat(n)),
                (1usize..2000).prop_map(|n| "{{A}}".repeat(n)),
                any::<String>(),
            ]
        }

        fn questions() -> Vec<Question> {
            let thirty = Question {
                choices: Some((1..=30).map(|n| format!("c{n}")).collect()),
                context: Some("지문".into()),
                ..question()
            };
            let free = Question {
                choices: None,
                category: None,
                ..question()
            };
            vec![question(), thirty, free]
        }

        fn check(text: &str, questions: &[Question]) -> std::result::Result<(), TestCaseError> {
            let (outcome, largest) = largest_allocation(|| {
                PromptTemplate::parse(text).map(|template| {
                    let rendered: Vec<_> = questions.iter().map(|q| template.render(q)).collect();
                    rendered
                })
            });
            prop_assert!(
                largest <= PARSE_ALLOCATION_LIMIT,
                "an allocation of {largest} bytes"
            );
            match outcome {
                Err((line, reason)) => {
                    prop_assert!(line >= 1 && line <= text.matches('\n').count() + 1);
                    prop_assert!(!reason.is_empty());
                }
                Ok(rendered) => {
                    let plain = !text.contains("{{") && !text.contains("{%");
                    for prompt in rendered {
                        match prompt {
                            Ok(prompt) if plain => prop_assert_eq!(prompt.as_str(), text),
                            Ok(prompt) => prop_assert!(prompt.len() <= MAX_RENDERED_BYTES),
                            Err(reason) => prop_assert!(!reason.is_empty()),
                        }
                    }
                }
            }
            Ok(())
        }

        #[test]
        fn property_template_parser_and_renderer_never_panic() {
            let questions = questions();
            let mut runner = TestRunner::new(property_config(1000));
            runner
                .run(&proptest::collection::vec(piece(), 0..48), |pieces| {
                    check(&pieces.concat(), &questions)
                })
                .unwrap();
        }
    }
}
