//! Column mapping: how a benchmark file's own columns become the question format's fields
//! (`run --map question=query,answer=answer:index1` or `--map-file F`, one entry a line).
//!
//! A mapping is part of a run's identity, so it has one canonical text ([`Mapping`]'s
//! `Display`): fields in a fixed order, which is also how it is stored (`runs.config_json`) and
//! shown by `report`. Fields a mapping does not name are read from the column of the same name,
//! as without a mapping.

use crate::error::{usage, Result};
use serde_json::{Map, Value};
use std::fmt;
use std::path::Path;

/// The fields a mapping can fill, in canonical order.
const TARGETS: [&str; 6] = ["id", "question", "context", "category", "choices", "answer"];

/// How the answer column names the correct choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerForm {
    /// The reference text (for multiple choice: the correct choice's text). The default.
    Text,
    /// 0-based index of the correct choice (lm-evaluation-harness's `doc_to_target` integer).
    Index0,
    /// 1-based index (KMMLU's `answer` column, 1–4).
    Index1,
    /// A letter: `A`, `b`, `(C)`, `D.` (HAE-RAE's `(A)`).
    Letter,
}

impl AnswerForm {
    const NAMES: [(&'static str, AnswerForm); 4] = [
        ("text", AnswerForm::Text),
        ("index0", AnswerForm::Index0),
        ("index1", AnswerForm::Index1),
        ("letter", AnswerForm::Letter),
    ];

    fn name(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(_, form)| *form == self)
            .map_or("text", |(name, _)| name)
    }
}

/// Where the choices come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChoicesSource {
    /// One column holding a list: a JSON array, a Python list literal (`['a', 'b']`) or
    /// `a | b | c`.
    List(String),
    /// One column per choice, in order (`A|B|C|D`); trailing empty cells are no choice.
    Columns(Vec<String>),
}

/// The answer column and the form of its values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerSource {
    /// Column name.
    pub column: String,
    /// How it names the correct choice.
    pub form: AnswerForm,
}

/// A column mapping. Stored as its canonical text (see the module documentation).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Mapping {
    /// Column of the question id.
    pub id: Option<String>,
    /// Column of the question text.
    pub question: Option<String>,
    /// Column of the passage placed before the question.
    pub context: Option<String>,
    /// Column of the category.
    pub category: Option<String>,
    /// Where the choices are.
    pub choices: Option<ChoicesSource>,
    /// Where the answer is, and its form.
    pub answer: Option<AnswerSource>,
}

impl fmt::Display for Mapping {
    /// The canonical text: `field=source` entries in [`TARGETS`] order, joined by commas.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut entries = Vec::new();
        for (target, column) in self.plain() {
            if let Some(column) = column {
                entries.push(format!("{target}={column}"));
            }
        }
        match &self.choices {
            Some(ChoicesSource::List(column)) => entries.push(format!("choices={column}")),
            Some(ChoicesSource::Columns(columns)) => {
                entries.push(format!("choices={}", columns.join("|")))
            }
            None => {}
        }
        if let Some(answer) = &self.answer {
            entries.push(format!("answer={}:{}", answer.column, answer.form.name()));
        }
        f.write_str(&entries.join(","))
    }
}

impl From<Mapping> for String {
    fn from(mapping: Mapping) -> String {
        mapping.to_string()
    }
}

impl TryFrom<String> for Mapping {
    type Error = String;

    /// Reads the canonical text back (the stored form of a run's mapping).
    fn try_from(text: String) -> std::result::Result<Mapping, String> {
        let mut mapping = Mapping::default();
        for entry in text.split(',').filter(|e| !e.trim().is_empty()) {
            mapping.add(entry)?;
        }
        Ok(mapping)
    }
}

/// The mapping of `--map TEXT` or `--map-file FILE` (clap makes them exclusive), checked; `None`
/// when neither is given. Every mistake is a usage error naming the entry and where it is.
pub fn from_args(map: Option<&str>, map_file: Option<&Path>) -> Result<Option<Mapping>> {
    let mut mapping = Mapping::default();
    match (map, map_file) {
        (Some(text), _) => {
            for entry in text.split(',').filter(|e| !e.trim().is_empty()) {
                mapping
                    .add(entry)
                    .map_err(|reason| usage(format!("--map {text:?}: {reason}")))?;
            }
        }
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                usage(format!(
                    "--map-file {} cannot be read ({e}); check the path",
                    path.display()
                ))
            })?;
            for (index, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                for entry in line.split(',').filter(|e| !e.trim().is_empty()) {
                    mapping.add(entry).map_err(|reason| {
                        usage(format!("{}:{}: {reason}", path.display(), index + 1))
                    })?;
                }
            }
        }
        (None, None) => return Ok(None),
    }
    if mapping == Mapping::default() {
        return Err(usage(
            "the mapping is empty; give entries such as question=query,answer=answer:index1",
        ));
    }
    Ok(Some(mapping))
}

impl Mapping {
    /// The fields read from one text column each, with their columns.
    fn plain(&self) -> [(&'static str, &Option<String>); 4] {
        [
            ("id", &self.id),
            ("question", &self.question),
            ("context", &self.context),
            ("category", &self.category),
        ]
    }

    /// Add one `field=column[:form]` entry; the reason names the entry when it is wrong.
    fn add(&mut self, entry: &str) -> std::result::Result<(), String> {
        let entry = entry.trim();
        let Some((target, source)) = entry.split_once('=') else {
            return Err(format!(
                "entry {entry:?} is not field=column; fields: {}",
                TARGETS.join(", ")
            ));
        };
        let (target, source) = (target.trim(), source.trim());
        if source.is_empty() {
            return Err(format!("entry {entry:?} names no column"));
        }
        let taken = match target {
            "id" => self.id.replace(source.to_string()).is_some(),
            "question" => self.question.replace(source.to_string()).is_some(),
            "context" => self.context.replace(source.to_string()).is_some(),
            "category" => self.category.replace(source.to_string()).is_some(),
            "choices" => self.choices.replace(choices_source(source)?).is_some(),
            "answer" => self.answer.replace(answer_source(source)?).is_some(),
            other => {
                return Err(format!(
                    "unknown field {other:?}; fields: {}",
                    TARGETS.join(", ")
                ))
            }
        };
        if taken {
            return Err(format!("field {target:?} is mapped twice"));
        }
        Ok(())
    }

    /// Every column this mapping reads, with the field it fills.
    pub fn columns(&self) -> Vec<(&str, &'static str)> {
        let mut columns = Vec::new();
        for (target, column) in self.plain() {
            if let Some(column) = column {
                columns.push((column.as_str(), target));
            }
        }
        match &self.choices {
            Some(ChoicesSource::List(column)) => columns.push((column.as_str(), "choices")),
            Some(ChoicesSource::Columns(list)) => {
                columns.extend(list.iter().map(|c| (c.as_str(), "choices")))
            }
            None => {}
        }
        if let Some(answer) = &self.answer {
            columns.push((answer.column.as_str(), "answer"));
        }
        columns
    }

    /// One record of the file as the question format's fields (`known`) and the columns the
    /// mapping did not use (`extra`, kept verbatim under their own names). The reason names the
    /// column and the field when a value does not fit.
    pub fn apply(&self, mut record: Map<String, Value>) -> std::result::Result<Mapped, String> {
        let mut known = Map::new();
        for (target, column) in self.plain() {
            let column = column.as_deref().unwrap_or(target);
            if let Some(value) = record.remove(column) {
                known.insert(target.to_string(), value);
            }
        }
        if let (Some(column), None) = (&self.question, known.get("question")) {
            return Err(format!(
                "column \"{column}\" (mapped to question) is missing"
            ));
        }
        let choices = self.take_choices(&mut record)?;
        let count = choices.as_ref().map(Vec::len);
        if let Some(choices) = choices {
            known.insert("choices".into(), Value::from(choices));
        }
        match &self.answer {
            Some(answer) => {
                if let Some(value) = record.remove(&answer.column) {
                    let (field, value) = answer_value(answer, value, count)?;
                    known.insert(field.into(), value);
                }
            }
            None => {
                for field in ["answer", "answer_index"] {
                    if let Some(value) = record.remove(field) {
                        known.insert(field.into(), value);
                    }
                }
            }
        }
        Ok(Mapped {
            known,
            extra: record,
        })
    }

    /// The choices of a record as text, taken out of it; `None` when it has none.
    fn take_choices(
        &self,
        record: &mut Map<String, Value>,
    ) -> std::result::Result<Option<Vec<String>>, String> {
        match &self.choices {
            None => match record.remove("choices") {
                None | Some(Value::Null) => Ok(None),
                Some(value) => list_value("choices", value).map(Some),
            },
            Some(ChoicesSource::List(column)) => match record.remove(column) {
                None | Some(Value::Null) => Ok(None),
                Some(value) => list_value(column, value).map(Some),
            },
            Some(ChoicesSource::Columns(columns)) => {
                let cells: Vec<Option<String>> = columns
                    .iter()
                    .map(|c| record.remove(c).and_then(|v| cell_text(&v)))
                    .collect();
                let used = cells.iter().rposition(Option::is_some).map_or(0, |i| i + 1);
                if let Some(gap) = cells[..used].iter().position(Option::is_none) {
                    return Err(format!(
                        "column \"{}\" (choice {} of choices={}) is empty while a later choice is not",
                        columns[gap],
                        gap + 1,
                        columns.join("|")
                    ));
                }
                Ok((used > 0).then(|| cells.into_iter().flatten().collect()))
            }
        }
    }
}

/// A record after mapping: the question format's fields, and the columns left over.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Mapped {
    /// `id`, `question`, `answer`, `answer_index`, `choices`, `category`, `context`.
    pub known: Map<String, Value>,
    /// Every other column, verbatim.
    pub extra: Map<String, Value>,
}

fn choices_source(source: &str) -> std::result::Result<ChoicesSource, String> {
    if !source.contains('|') {
        return Ok(ChoicesSource::List(source.to_string()));
    }
    let columns: Vec<String> = source.split('|').map(|c| c.trim().to_string()).collect();
    if columns.iter().any(String::is_empty) {
        return Err(format!("choices={source} has an empty column name"));
    }
    if columns.len() < 2 {
        return Err(format!("choices={source} needs at least two columns"));
    }
    Ok(ChoicesSource::Columns(columns))
}

fn answer_source(source: &str) -> std::result::Result<AnswerSource, String> {
    let (column, form) = match source.rsplit_once(':') {
        Some((column, form)) => {
            let form = AnswerForm::NAMES
                .iter()
                .find(|(name, _)| *name == form.trim())
                .map(|(_, form)| *form)
                .ok_or_else(|| {
                    format!(
                        "answer={source}: unknown answer form {:?}; use text, index0, index1 or letter",
                        form.trim()
                    )
                })?;
            (column.trim(), form)
        }
        None => (source, AnswerForm::Text),
    };
    if column.is_empty() {
        return Err(format!("answer={source} names no column"));
    }
    Ok(AnswerSource {
        column: column.to_string(),
        form,
    })
}

/// A cell as text: strings (blank is none) and numbers.
fn cell_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A list cell: an array, or text holding a JSON array, a Python list literal or `a | b`; its
/// items by the same rule as a `choices` array without a mapping ([`super::choice_list`]).
fn list_value(column: &str, value: Value) -> std::result::Result<Vec<String>, String> {
    let items = match value {
        Value::Array(items) => items,
        Value::String(text) => list_text(&text),
        other => {
            return Err(format!(
                "column \"{column}\" must hold a list of choices, found {other}"
            ))
        }
    };
    super::choice_list(&items).map_err(|reason| format!("column \"{column}\": {reason}"))
}

/// Choices written as text: a JSON array, a Python list literal of strings (as pandas and the
/// `datasets` library write lists to CSV), else `|`-separated. Every item is kept in its
/// position, blank or not, for [`super::choice_list`] to judge.
pub(crate) fn list_text(text: &str) -> Vec<Value> {
    let trimmed = text.trim();
    if let Ok(Value::Array(items)) = serde_json::from_str::<Value>(trimmed) {
        return items;
    }
    if let Some(items) = python_list(trimmed) {
        return items.into_iter().map(Value::String).collect();
    }
    trimmed
        .split('|')
        .map(|c| Value::String(c.trim().to_string()))
        .collect()
}

/// `['a', "b's", 'c\'d']`: the strings of a Python list literal; `None` when it is not one.
fn python_list(text: &str) -> Option<Vec<String>> {
    let mut chars = text
        .strip_prefix('[')?
        .strip_suffix(']')?
        .chars()
        .peekable();
    let mut items = Vec::new();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        let Some(quote) = chars.next() else {
            return Some(items);
        };
        if quote != '\'' && quote != '"' {
            return None;
        }
        let mut item = String::new();
        loop {
            match chars.next()? {
                '\\' => item.push(match chars.next()? {
                    'n' => '\n',
                    't' => '\t',
                    other => other,
                }),
                c if c == quote => break,
                c => item.push(c),
            }
        }
        items.push(item);
    }
}

/// The answer cell converted to the format's `answer` (text) or `answer_index` (0-based).
fn answer_value(
    answer: &AnswerSource,
    value: Value,
    choices: Option<usize>,
) -> std::result::Result<(&'static str, Value), String> {
    let column = &answer.column;
    let form = answer.form.name();
    let text = cell_text(&value)
        .ok_or_else(|| format!("column \"{column}\" (answer:{form}) must be text or a number"))?;
    let index = match answer.form {
        AnswerForm::Text => return Ok(("answer", Value::String(text))),
        AnswerForm::Index0 | AnswerForm::Index1 => {
            let number: usize = text.trim().parse().map_err(|_| {
                format!("column \"{column}\" (answer:{form}) is {text:?}, not a whole number")
            })?;
            let first = usize::from(answer.form == AnswerForm::Index1);
            number.checked_sub(first).ok_or_else(|| {
                format!(
                    "column \"{column}\" (answer:{form}) is {number}; 1-based indexes start at 1"
                )
            })?
        }
        AnswerForm::Letter => letter_index(&text).ok_or_else(|| {
            format!(
                "column \"{column}\" (answer:letter) is {text:?}, not a letter such as A or (A)"
            )
        })?,
    };
    let count = choices.ok_or_else(|| {
        format!("column \"{column}\" (answer:{form}) names a choice, but the record has no choices")
    })?;
    if index >= count {
        return Err(format!(
            "column \"{column}\" (answer:{form}) is {}, but the question has {count} choices",
            text.trim()
        ));
    }
    Ok(("answer_index", Value::from(index)))
}

/// `A`, `b`, `(C)`, `D.`, `[E]` → 0-based index.
fn letter_index(text: &str) -> Option<usize> {
    let letter = text
        .trim()
        .trim_start_matches(['(', '['])
        .trim_end_matches([')', ']', '.', ':']);
    let mut chars = letter.chars();
    let c = chars.next()?.to_ascii_uppercase();
    (chars.next().is_none() && c.is_ascii_uppercase()).then(|| c as usize - 'A' as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn mapping(text: &str) -> Mapping {
        from_args(Some(text), None).unwrap().unwrap()
    }

    fn object(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn canonical_text_orders_fields_and_round_trips_through_serde() {
        let m = mapping(" answer = answer:index1 , choices=A|B|C|D,category=Category");
        assert_eq!(
            m.to_string(),
            "category=Category,choices=A|B|C|D,answer=answer:index1"
        );
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(
            json,
            "\"category=Category,choices=A|B|C|D,answer=answer:index1\""
        );
        assert_eq!(serde_json::from_str::<Mapping>(&json).unwrap(), m);
        assert_eq!(mapping("answer=gold").to_string(), "answer=gold:text");
    }

    #[test]
    fn every_mistake_names_the_entry() {
        let cases = [
            ("qustion=query", "unknown field \"qustion\""),
            ("question", "is not field=column"),
            ("question=", "names no column"),
            ("question=a,question=b", "mapped twice"),
            ("answer=gold:index2", "unknown answer form \"index2\""),
            ("choices=A||C", "empty column name"),
            (",", "the mapping is empty"),
        ];
        for (text, expected) in cases {
            let message = from_args(Some(text), None).unwrap_err().to_string();
            assert!(message.contains(expected), "{text}: {message}");
            if expected != "the mapping is empty" {
                assert!(message.starts_with("--map "), "{message}");
            }
        }
    }

    #[test]
    fn a_mapping_file_names_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kmmlu.map");
        std::fs::write(&path, "# KMMLU\nchoices=A|B|C|D\n\nanswer=answer:index9\n").unwrap();
        let message = from_args(None, Some(&path)).unwrap_err().to_string();
        assert!(
            message.contains("kmmlu.map:4: answer=answer:index9"),
            "{message}"
        );
        std::fs::write(&path, "# KMMLU\nchoices=A|B|C|D\nanswer=answer:index1\n").unwrap();
        let m = from_args(None, Some(&path)).unwrap().unwrap();
        assert_eq!(m.to_string(), "choices=A|B|C|D,answer=answer:index1");
    }

    #[test]
    fn kmmlu_columns_and_a_one_based_answer() {
        let m = mapping("choices=A|B|C|D,answer=answer:index1,category=Category");
        let record = object(json!({"question": "Q", "answer": "2", "A": "a", "B": "b",
            "C": "c", "D": "d", "Category": "law", "Human Accuracy": "0.5"}));
        let mapped = m.apply(record).unwrap();
        assert_eq!(
            Value::Object(mapped.known),
            json!({"question": "Q", "category": "law", "choices": ["a", "b", "c", "d"], "answer_index": 1})
        );
        assert_eq!(
            Value::Object(mapped.extra),
            json!({"Human Accuracy": "0.5"})
        );
        let out_of_range =
            object(json!({"question": "Q", "answer": 5, "A": "a", "B": "b", "C": "c", "D": "d"}));
        let reason = m.apply(out_of_range).unwrap_err();
        assert!(
            reason
                .contains("column \"answer\" (answer:index1) is 5, but the question has 4 choices"),
            "{reason}"
        );
        let zero = object(json!({"question": "Q", "answer": "0", "A": "a", "B": "b"}));
        assert!(m.apply(zero).unwrap_err().contains("start at 1"));
    }

    #[test]
    fn letters_python_lists_and_identity_defaults() {
        let m = mapping("question=query,choices=options,answer=answer:letter");
        let record = object(
            json!({"query": "Q ### 선택지: (A) x", "options": "['청노년', \"it's\", 'a\\'b']",
            "answer": "(B)", "question": "kept as extra"}),
        );
        let mapped = m.apply(record).unwrap();
        assert_eq!(mapped.known["question"], json!("Q ### 선택지: (A) x"));
        assert_eq!(mapped.known["choices"], json!(["청노년", "it's", "a'b"]));
        assert_eq!(mapped.known["answer_index"], json!(1));
        assert_eq!(mapped.extra["question"], json!("kept as extra"));
        let missing = m
            .apply(object(
                json!({"question": "not the query", "answer": "(A)"}),
            ))
            .unwrap_err();
        assert_eq!(missing, "column \"query\" (mapped to question) is missing");
        for (text, index) in [
            ("A", Some(0)),
            ("(c)", Some(2)),
            ("D.", Some(3)),
            ("AB", None),
            ("1", None),
        ] {
            assert_eq!(letter_index(text), index, "{text}");
        }
        assert_eq!(list_text("[\"a\", \"b\"]"), [json!("a"), json!("b")]);
        assert_eq!(list_text("a | b"), [json!("a"), json!("b")]);
        assert_eq!(python_list("['a', 'b"), None);
        // CLIcK: only the passage is renamed; the rest is read by name.
        let click = mapping("context=paragraph");
        let mapped = click
            .apply(object(json!({"id": "x", "paragraph": "", "question": "Q", "choices": ["a", "b"], "answer": "b"})))
            .unwrap();
        assert_eq!(
            Value::Object(mapped.known),
            json!({"id": "x", "question": "Q", "context": "", "choices": ["a", "b"], "answer": "b"})
        );
    }

    #[test]
    fn a_blank_or_null_item_in_a_mapped_list_is_refused_never_dropped() {
        // The answer index 2 names "c"; dropping the blank item would make it name "d".
        let m = mapping("choices=options,answer=gold:index0");
        for options in [
            json!("[\"a\", \"\", \"c\", \"d\"]"),
            json!("[\"a\", null, \"c\", \"d\"]"),
            json!("['a', ' ', 'c', 'd']"),
            json!("a | | c | d"),
            json!(["a", "", "c", "d"]),
            json!(["a", null, "c", "d"]),
        ] {
            let record = object(json!({"question": "Q", "options": options, "gold": 2}));
            let reason = m.apply(record).unwrap_err();
            assert!(
                reason.starts_with("column \"options\": choice 2 is "),
                "{options}: {reason}"
            );
        }
        let kept = m
            .apply(object(
                json!({"question": "Q", "options": "[\"a\", \"b\", \"c\", \"d\"]", "gold": 2}),
            ))
            .unwrap();
        assert_eq!(kept.known["choices"], json!(["a", "b", "c", "d"]));
        assert_eq!(kept.known["answer_index"], json!(2));
        // A letter key reads the same positions.
        let letter = mapping("choices=options,answer=gold:letter")
            .apply(object(
                json!({"question": "Q", "options": "[\"a\", \"\", \"c\"]", "gold": "C"}),
            ))
            .unwrap_err();
        assert!(letter.contains("choice 2 is blank"), "{letter}");
    }

    #[test]
    fn choice_columns_drop_trailing_blanks_and_refuse_gaps() {
        let m = mapping("choices=A|B|C|D|E");
        let four = m
            .apply(object(
                json!({"question": "Q", "A": "a", "B": "b", "C": "c", "D": "d", "E": ""}),
            ))
            .unwrap();
        assert_eq!(four.known["choices"], json!(["a", "b", "c", "d"]));
        let gap = m
            .apply(object(json!({"question": "Q", "A": "a", "C": "c"})))
            .unwrap_err();
        assert!(
            gap.contains("column \"B\" (choice 2 of choices=A|B|C|D|E) is empty"),
            "{gap}"
        );
    }

    mod property {
        //! `--map` texts assembled from the syntax's pieces and arbitrary text, and records of
        //! arbitrary small values: parsing never panics and either fails with a usage error
        //! naming `--map` or gives a mapping whose canonical text reads back as itself; applying
        //! it never panics; and a choice list written in any form either keeps every item in its
        //! position (the answer index names the same choice) or is refused.

        use super::*;
        use crate::alloc_probe::{largest_allocation, property_config, PARSE_ALLOCATION_LIMIT};
        use crate::dataset::validate;
        use crate::error::Error;
        use proptest::prelude::*;
        use proptest::test_runner::{TestCaseError, TestRunner};

        const COLUMNS: [&str; 8] = ["q", "opts", "gold", "A", "B", "C", "choices", "answer"];

        fn map_piece() -> impl Strategy<Value = String> {
            prop_oneof![
                prop::sample::select(vec![
                    "question",
                    "context",
                    "category",
                    "id",
                    "choices",
                    "answer",
                    "=",
                    ",",
                    ":",
                    "|",
                    " ",
                    "index0",
                    "index1",
                    "letter",
                    "text",
                    "index2",
                    "q",
                    "opts",
                    "gold",
                    "A|B|C",
                    "A||C",
                    "choices=opts",
                    "answer=gold:index0",
                    "question=q",
                ])
                .prop_map(String::from),
                any::<String>(),
            ]
        }

        fn cell() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                prop::sample::select(vec![
                    "",
                    " ",
                    "a",
                    "b",
                    "가",
                    "A",
                    "(B)",
                    "c.",
                    "0",
                    "1",
                    "2",
                    "3",
                    "27",
                    "-1",
                    "[\"a\", \"\", \"c\"]",
                    "[\"a\", \"b\"]",
                    "[null, 1]",
                    "['a', 'b']",
                    "['a', '']",
                    "a | b",
                    "a | | b",
                    "[",
                    "['a",
                    "18446744073709551616",
                ])
                .prop_map(Value::from),
                any::<i64>().prop_map(Value::from),
                any::<f64>().prop_map(
                    |f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
                ),
                any::<bool>().prop_map(Value::from),
                Just(Value::Null),
                any::<String>().prop_map(Value::from),
            ];
            leaf.prop_recursive(2, 16, 6, |inner| {
                proptest::collection::vec(inner, 0..6).prop_map(Value::Array)
            })
        }

        fn record() -> impl Strategy<Value = Map<String, Value>> {
            proptest::collection::vec((prop::sample::select(COLUMNS.to_vec()), cell()), 0..8)
                .prop_map(|cells| {
                    cells
                        .into_iter()
                        .map(|(column, value)| (column.to_string(), value))
                        .collect()
                })
        }

        fn check_mapping(
            text: &str,
            records: &[Map<String, Value>],
        ) -> std::result::Result<(), TestCaseError> {
            let mapping = match from_args(Some(text), None) {
                Ok(mapping) => mapping,
                Err(error) => {
                    match error.downcast_ref::<Error>() {
                        Some(Error::Usage(message)) => prop_assert!(
                            message.starts_with("--map ") || message.contains("mapping is empty"),
                            "{message}"
                        ),
                        _ => prop_assert!(false, "untyped error: {error:#}"),
                    }
                    return Ok(());
                }
            };
            let Some(mapping) = mapping else {
                return Err(TestCaseError::fail("--map given but no mapping"));
            };
            let canonical = mapping.to_string();
            let read_back = Mapping::try_from(canonical.clone());
            prop_assert_eq!(read_back, Ok(mapping.clone()), "{}", canonical);
            for record in records {
                let (mapped, largest) = largest_allocation(|| mapping.apply(record.clone()));
                prop_assert!(
                    largest <= PARSE_ALLOCATION_LIMIT,
                    "an allocation of {largest} bytes"
                );
                let Ok(mapped) = mapped else {
                    continue;
                };
                if let Ok(question) = validate(mapped, 1, 1) {
                    if let (Some(choices), Some(index)) = (&question.choices, question.answer_index)
                    {
                        prop_assert_eq!(question.reference.as_ref(), Some(&choices[index]));
                    }
                }
            }
            Ok(())
        }

        #[test]
        fn property_mapping_parser_and_apply_never_panic() {
            let mut runner = TestRunner::new(property_config(1000));
            let case = (
                proptest::collection::vec(map_piece(), 0..12),
                proptest::collection::vec(record(), 0..4),
            );
            runner
                .run(&case, |(pieces, records)| {
                    check_mapping(&pieces.concat(), &records)
                })
                .unwrap();
        }

        /// How a list of choices is written in a cell.
        #[derive(Debug, Clone, Copy)]
        enum Written {
            Array,
            JsonText,
            PythonText,
            PipeText,
        }

        fn written(items: &[Option<String>], form: Written) -> Value {
            let strings = || items.iter().map(|i| i.clone().unwrap_or_default());
            match form {
                Written::Array => Value::from(items.to_vec()),
                Written::JsonText => Value::from(Value::from(items.to_vec()).to_string()),
                Written::PythonText => Value::from(format!(
                    "[{}]",
                    strings()
                        .map(|s| format!("'{s}'"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
                Written::PipeText => Value::from(strings().collect::<Vec<_>>().join(" | ")),
            }
        }

        #[test]
        fn property_a_mapped_list_keeps_positions_or_is_refused() {
            let item = prop_oneof![
                Just(None),
                prop::sample::select(vec!["", " ", "a", "b", "가 나", "c", "0"])
                    .prop_map(|s| Some(s.to_string())),
            ];
            let form = prop_oneof![
                Just(Written::Array),
                Just(Written::JsonText),
                Just(Written::PythonText),
                Just(Written::PipeText),
            ];
            let case = (proptest::collection::vec(item, 1..8), form, 0usize..9);
            let mut runner = TestRunner::new(property_config(1000));
            let mapping = from_args(Some("choices=opts,answer=gold:index0"), None)
                .unwrap()
                .unwrap();
            runner
                .run(&case, |(items, form, gold)| {
                    let record: Map<String, Value> = [
                        ("question".to_string(), Value::from("Q")),
                        ("opts".to_string(), written(&items, form)),
                        ("gold".to_string(), Value::from(gold)),
                    ]
                    .into_iter()
                    .collect();
                    let question = mapping.apply(record).and_then(|m| validate(m, 1, 1));
                    let blank = items
                        .iter()
                        .any(|i| i.as_deref().is_none_or(|s| s.trim().is_empty()));
                    match question {
                        Ok(question) => {
                            prop_assert!(!blank, "{items:?} {form:?} accepted");
                            let chosen = items[gold].as_deref().map(str::trim);
                            prop_assert_eq!(question.reference.as_deref(), chosen);
                        }
                        Err(reason) => prop_assert!(
                            blank || items.len() < 2 || gold >= items.len(),
                            "{items:?} {form:?} {gold}: {reason}"
                        ),
                    }
                    Ok(())
                })
                .unwrap();
        }
    }
}
