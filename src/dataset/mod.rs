//! Question sets: JSONL, a JSON array, or CSV with a header, validated as a whole before any model
//! is loaded. Every problem names the file, the line and the reason.

pub mod mapping;
pub mod shard;

use crate::error::{Error, Result};
use mapping::{Mapped, Mapping};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Fields the question format defines; everything else is kept in [`Question::extra`].
const KNOWN_FIELDS: [&str; 7] = [
    "id",
    "question",
    "answer",
    "answer_index",
    "choices",
    "category",
    "context",
];

/// One validated question.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Question {
    /// Unique id (given, or the 1-based line/row/element number).
    pub id: String,
    /// 1-based position in the set.
    pub ordinal: usize,
    /// Line in the file where the question starts (for messages).
    pub line: usize,
    /// The question text.
    pub question: String,
    /// Reference answer text, if any. For multiple choice, the correct choice's text.
    pub reference: Option<String>,
    /// Choices of a multiple-choice question.
    pub choices: Option<Vec<String>>,
    /// 0-based index of the correct choice, when known.
    pub answer_index: Option<usize>,
    /// Free-form category (e.g. era, topic).
    pub category: Option<String>,
    /// Passage placed before the question.
    pub context: Option<String>,
    /// Unknown fields of the input, kept verbatim.
    pub extra: Map<String, Value>,
}

impl Question {
    /// Whether this is a multiple-choice question.
    pub fn is_multiple_choice(&self) -> bool {
        self.choices.is_some()
    }
}

/// A validated question file.
#[derive(Debug, Clone)]
pub struct QuestionSet {
    /// Where it was read from.
    pub path: PathBuf,
    /// sha256 of the file's bytes: part of a run's identity.
    pub sha256: String,
    /// The questions in file order.
    pub questions: Vec<Question>,
}

/// Whether `text` contains Hangul syllables or jamo.
pub fn contains_hangul(text: &str) -> bool {
    text.chars().any(|c| {
        matches!(c, '\u{AC00}'..='\u{D7A3}' | '\u{1100}'..='\u{11FF}' | '\u{3130}'..='\u{318F}')
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    JsonLines,
    JsonArray,
    Csv,
}

/// Read and validate a question file in the question format. On any problem, returns every
/// problem found, each naming the file and the line.
pub fn load(path: &Path) -> Result<QuestionSet> {
    load_mapped(path, None)
}

/// Read and validate a question file whose columns `mapping` renames (see [`mapping`]).
pub fn load_mapped(path: &Path, mapping: Option<&Mapping>) -> Result<QuestionSet> {
    let bytes = std::fs::read(path).map_err(|e| {
        Error::Usage(format!(
            "cannot read question file {}: {e}; check the --questions path",
            path.display()
        ))
    })?;
    let sha256 = hex_sha256(&bytes);
    let text = decode_utf8(path, &bytes)?;
    let format = detect_format(path, text)?;
    let records = match format {
        Format::JsonLines => parse_json_lines(path, text),
        Format::JsonArray => parse_json_array(path, text),
        Format::Csv => parse_csv(path, text),
    };
    let mut problems = mapping
        .map(|m| unused_columns(path, m, &records))
        .unwrap_or_default();
    let mut questions = Vec::new();
    for record in records {
        match record {
            Ok((line, ordinal, object)) => {
                let mapped = match mapping {
                    Some(mapping) => mapping.apply(object),
                    None => Ok(split_known(object)),
                };
                match mapped
                    .and_then(|m| validate(m, line, ordinal))
                    .and_then(without_nul)
                {
                    Ok(question) => questions.push(question),
                    Err(reason) => problems.push(format!("{}:{line}: {reason}", path.display())),
                }
            }
            Err(problem) => problems.push(problem),
        }
    }
    let mut first_line_of_id: HashMap<&str, usize> = HashMap::new();
    for question in &questions {
        if let Some(first) = first_line_of_id.insert(&question.id, question.line) {
            problems.push(format!(
                "{}:{}: duplicate id \"{}\" (first used on line {first}); ids must be unique",
                path.display(),
                question.line,
                question.id
            ));
        }
    }
    if questions.is_empty() && problems.is_empty() {
        problems.push(format!(
            "{}: no questions found; the file is empty",
            path.display()
        ));
    }
    if !problems.is_empty() {
        return Err(Error::InvalidQuestions(problems).into());
    }
    Ok(QuestionSet {
        path: path.to_path_buf(),
        sha256,
        questions,
    })
}

/// A mapped column that no record has is a typo or the wrong file: one problem naming it.
fn unused_columns(path: &Path, mapping: &Mapping, records: &[Record]) -> Vec<String> {
    let mut seen: Vec<&str> = Vec::new();
    for (_, _, object) in records.iter().flatten() {
        for key in object.keys() {
            if !seen.contains(&key.as_str()) {
                seen.push(key);
            }
        }
    }
    mapping
        .columns()
        .into_iter()
        .filter(|(column, _)| !seen.contains(column))
        .map(|(column, target)| {
            format!(
                "{}: no record has a value in column \"{column}\" (mapped to {target}); columns found: {}",
                path.display(),
                seen.join(", ")
            )
        })
        .collect()
}

/// A record in the question format: its fields, and the unknown ones kept apart.
fn split_known(object: Map<String, Value>) -> Mapped {
    let (known, extra) = object
        .into_iter()
        .partition(|(key, _)| KNOWN_FIELDS.contains(&key.as_str()));
    Mapped { known, extra }
}

/// sha256 of a byte slice, lowercase hex.
pub fn hex_sha256(bytes: &[u8]) -> String {
    crate::units::hex(&Sha256::digest(bytes))
}

fn decode_utf8<'a>(path: &Path, bytes: &'a [u8]) -> Result<&'a str> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    std::str::from_utf8(bytes).map_err(|e| {
        let valid = &bytes[..e.valid_up_to()];
        let line = valid.iter().filter(|&&b| b == b'\n').count() + 1;
        anyhow::Error::from(Error::InvalidQuestions(vec![format!(
            "{}:{line}: invalid UTF-8 at byte {}; save the file as UTF-8",
            path.display(),
            e.valid_up_to()
        )]))
    })
}

fn detect_format(path: &Path, text: &str) -> Result<Format> {
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match extension.as_deref() {
        Some("jsonl") | Some("ndjson") => return Ok(Format::JsonLines),
        Some("csv") => return Ok(Format::Csv),
        _ => {}
    }
    match text.trim_start().chars().next() {
        Some('[') => Ok(Format::JsonArray),
        Some('{') => Ok(Format::JsonLines),
        None => Err(Error::InvalidQuestions(vec![format!(
            "{}: no questions found; the file is empty",
            path.display()
        )]).into()),
        Some(_) => Err(Error::Usage(format!(
            "{}: unknown question format; use .jsonl (one JSON object a line), .json (an array) or .csv (with a header)",
            path.display()
        )).into()),
    }
}

/// (line, ordinal, object) of one record, or a finished problem message.
type Record = std::result::Result<(usize, usize, Map<String, Value>), String>;

fn parse_json_lines(path: &Path, text: &str) -> Vec<Record> {
    let mut records = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line_number = index + 1;
        if line.trim().is_empty() {
            continue;
        }
        records.push(match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(object)) => Ok((line_number, records.len() + 1, object)),
            Ok(other) => Err(format!(
                "{}:{line_number}: expected a JSON object, found {}",
                path.display(),
                json_kind(&other)
            )),
            Err(e) => Err(format!(
                "{}:{line_number}: invalid JSON: {e}",
                path.display()
            )),
        });
    }
    records
}

fn parse_json_array(path: &Path, text: &str) -> Vec<Record> {
    let elements: Vec<&serde_json::value::RawValue> = match serde_json::from_str(text) {
        Ok(elements) => elements,
        Err(e) => {
            return vec![Err(format!(
                "{}:{}: invalid JSON array: {e}",
                path.display(),
                e.line()
            ))]
        }
    };
    // RawValue borrows from `text`, so its offset gives the element's line; elements come in
    // order, so lines are counted from the previous element on (once over the file, not once
    // per element).
    let (mut counted_to, mut line) = (0, 1);
    elements
        .into_iter()
        .enumerate()
        .map(|(index, raw)| {
            let offset = raw.get().as_ptr() as usize - text.as_ptr() as usize;
            line += text[counted_to..offset].matches('\n').count();
            counted_to = offset;
            match serde_json::from_str::<Value>(raw.get()) {
                Ok(Value::Object(object)) => Ok((line, index + 1, object)),
                Ok(other) => Err(format!(
                    "{}:{line}: element {} is {}, expected a JSON object",
                    path.display(),
                    index + 1,
                    json_kind(&other)
                )),
                Err(e) => Err(format!("{}:{line}: invalid JSON: {e}", path.display())),
            }
        })
        .collect()
}

fn parse_csv(path: &Path, text: &str) -> Vec<Record> {
    if let Some(line) = unclosed_quote(text) {
        return vec![Err(format!(
            "{}:{line}: a quoted field opened here is never closed; close the quote (a quote inside a quoted field is written \"\")",
            path.display()
        ))];
    }
    let mut reader = csv::ReaderBuilder::new()
        .flexible(false)
        .from_reader(text.as_bytes());
    let headers = match reader.headers() {
        Ok(headers) => headers.clone(),
        Err(e) => {
            return vec![Err(format!(
                "{}:1: invalid CSV header: {e}",
                path.display()
            ))]
        }
    };
    if let Some(problem) = duplicate_header(&headers) {
        return vec![Err(format!("{}:1: {problem}", path.display()))];
    }
    let mut records = Vec::new();
    for row in reader.records() {
        records.push(match row {
            Ok(row) => {
                let line = row.position().map_or(0, |p| p.line() as usize);
                let mut object = Map::new();
                for (header, cell) in headers.iter().zip(row.iter()) {
                    if cell.is_empty() {
                        continue;
                    }
                    object.insert(header.trim().to_string(), csv_cell(header.trim(), cell));
                }
                Ok((line, records.len() + 1, object))
            }
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line() as usize);
                Err(format!("{}:{line}: invalid CSV row: {e}", path.display()))
            }
        });
    }
    records
}

/// The line where a quoted CSV field opens and never closes, if one does. A quote opens a field
/// only at its start (as RFC 4180 has it); `""` inside a quoted field is a literal quote.
fn unclosed_quote(text: &str) -> Option<usize> {
    let (mut line, mut opened_on) = (1, None);
    let mut at_field_start = true;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (opened_on, c) {
            (Some(_), '"') if chars.peek() == Some(&'"') => {
                chars.next();
            }
            (Some(_), '"') => opened_on = None,
            (None, '"') if at_field_start => opened_on = Some(line),
            _ => {}
        }
        if c == '\n' {
            line += 1;
        }
        at_field_start = opened_on.is_none() && (c == ',' || c == '\n' || c == '\r');
    }
    opened_on
}

/// A column named twice would silently take one of the two cells.
fn duplicate_header(headers: &csv::StringRecord) -> Option<String> {
    let names: Vec<&str> = headers.iter().map(str::trim).collect();
    names.iter().enumerate().find_map(|(index, name)| {
        let first = names.iter().position(|n| n == name)?;
        (first != index).then(|| {
            format!(
                "column \"{name}\" appears twice in the header (columns {} and {}); rename one",
                first + 1,
                index + 1
            )
        })
    })
}

/// CSV cells are text; `choices` may hold a list written as text (read as a mapped list column
/// is, [`mapping::list_text`]), and `answer_index` a number.
fn csv_cell(header: &str, cell: &str) -> Value {
    match header {
        "choices" => Value::Array(mapping::list_text(cell)),
        "answer_index" => cell
            .trim()
            .parse::<u64>()
            .map(Value::from)
            .unwrap_or_else(|_| Value::String(cell.to_string())),
        _ => Value::String(cell.to_string()),
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A NUL character cannot reach the model (llama.cpp takes C strings): refused with the line,
/// before any model is loaded, rather than failing as an error row after.
fn without_nul(question: Question) -> std::result::Result<Question, String> {
    let fields = [
        ("id", Some(&question.id)),
        ("question", Some(&question.question)),
        ("answer", question.reference.as_ref()),
        ("category", question.category.as_ref()),
        ("context", question.context.as_ref()),
    ];
    let choices = question
        .choices
        .iter()
        .flatten()
        .map(|c| ("choices", Some(c)));
    for (field, text) in fields.into_iter().chain(choices) {
        if text.is_some_and(|t| t.contains('\0')) {
            return Err(format!(
                "\"{field}\" contains a NUL character, which no model can read; remove it"
            ));
        }
    }
    Ok(question)
}

/// The one rule for a list of choices, with or without a column mapping and whatever form the
/// list was written in: every item is non-empty text or a number, kept in its position. A blank
/// or null item is refused, not dropped: dropping it would move every later choice, and an
/// answer given by index or letter would then name a different choice.
pub(crate) fn choice_list(items: &[Value]) -> std::result::Result<Vec<String>, String> {
    let choices = items
        .iter()
        .enumerate()
        .map(|(index, item)| match item {
            Value::String(s) if !s.trim().is_empty() => Ok(s.trim().to_string()),
            Value::Number(n) => Ok(n.to_string()),
            Value::String(_) => Err(format!(
                "choice {} is blank; every choice must be non-empty text (a blank choice would move the answer key)",
                index + 1
            )),
            other => Err(format!(
                "choice {} is {}; every choice must be non-empty text",
                index + 1,
                json_kind(other)
            )),
        })
        .collect::<std::result::Result<Vec<String>, String>>()?;
    if choices.len() < 2 {
        return Err("\"choices\" needs at least two options".to_string());
    }
    Ok(choices)
}

fn optional_text(
    object: &Map<String, Value>,
    field: &str,
) -> std::result::Result<Option<String>, String> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(other) => Err(format!(
            "\"{field}\" must be text, found {}",
            json_kind(other)
        )),
    }
}

// Linear: one check per field, then the answer/choices cross-check; the schema reads top to bottom.
fn validate(mapped: Mapped, line: usize, ordinal: usize) -> std::result::Result<Question, String> {
    let Mapped {
        known: object,
        extra,
    } = mapped;
    let id = match object.get("id") {
        None | Some(Value::Null) => ordinal.to_string(),
        Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => n.to_string(),
        Some(other) => {
            return Err(format!(
                "\"id\" must be a non-empty string or an integer, found {}",
                json_kind(other)
            ))
        }
    };
    let question = match object.get("question") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
        Some(Value::String(_)) => return Err("\"question\" is empty".to_string()),
        None | Some(Value::Null) => return Err("missing required field \"question\"".to_string()),
        Some(other) => {
            return Err(format!(
                "\"question\" must be text, found {}",
                json_kind(other)
            ))
        }
    };
    let mut reference = optional_text(&object, "answer")?;
    let category = optional_text(&object, "category")?;
    let context = optional_text(&object, "context")?;
    let choices = match object.get("choices") {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) => Some(choice_list(items)?),
        Some(other) => {
            return Err(format!(
                "\"choices\" must be an array of strings, found {}",
                json_kind(other)
            ))
        }
    };
    let mut answer_index = match object.get("answer_index") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) if n.as_u64().is_some() => n.as_u64().map(|n| n as usize),
        Some(other) => {
            return Err(format!(
                "\"answer_index\" must be a 0-based integer, found {}",
                json_kind(other)
            ))
        }
    };
    match (&choices, answer_index) {
        (None, Some(_)) => return Err("\"answer_index\" given without \"choices\"".to_string()),
        (Some(choices), Some(index)) => {
            let Some(correct) = choices.get(index) else {
                return Err(format!(
                    "\"answer_index\" {index} is out of range for {} choices (it is 0-based)",
                    choices.len()
                ));
            };
            if let Some(text) = &reference {
                if text.trim() != correct {
                    return Err(format!(
                        "\"answer\" \"{text}\" disagrees with \"answer_index\" {index} (\"{correct}\")"
                    ));
                }
            }
            reference = Some(correct.clone());
        }
        (Some(choices), None) => {
            if let Some(text) = &reference {
                match choices.iter().position(|c| c == text.trim()) {
                    Some(index) => answer_index = Some(index),
                    None => {
                        return Err(format!(
                            "\"answer\" \"{text}\" is not one of the choices; give the choice's exact text or \"answer_index\""
                        ))
                    }
                }
            }
        }
        (None, None) => {}
    }
    Ok(Question {
        id,
        ordinal,
        line,
        question,
        reference,
        choices,
        answer_index,
        category,
        context,
        extra,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;

    fn write(name: &str, content: &[u8]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::File::create(&path)
            .unwrap()
            .write_all(content)
            .unwrap();
        (dir, path)
    }

    fn problems(name: &str, content: &[u8]) -> Vec<String> {
        let (_dir, path) = write(name, content);
        match load(&path).map_err(|e| e.downcast::<Error>()) {
            Err(Ok(Error::InvalidQuestions(problems))) => problems,
            other => panic!("expected InvalidQuestions, got {other:?}"),
        }
    }

    #[test]
    fn jsonl_with_bom_defaults_and_extra_fields() {
        let (_dir, path) = write(
            "q.jsonl",
            "\u{feff}{\"question\":\"세종대왕은?\",\"answer\":\"왕\",\"difficulty\":3}\n\n{\"id\":7,\"question\":\"Q2\",\"choices\":[\"a\",\"b\"],\"answer_index\":1}\n".as_bytes(),
        );
        let set = load(&path).unwrap();
        assert_eq!(set.questions.len(), 2);
        let first = &set.questions[0];
        assert_eq!(first.id, "1");
        assert_eq!(first.reference.as_deref(), Some("왕"));
        assert_eq!(first.extra.get("difficulty"), Some(&Value::from(3)));
        let second = &set.questions[1];
        assert_eq!(
            (second.id.as_str(), second.line, second.ordinal),
            ("7", 3, 2)
        );
        assert_eq!(second.reference.as_deref(), Some("b"));
        assert_eq!(set.sha256.len(), 64);
    }

    #[test]
    fn json_array_reports_element_lines() {
        let text = b"[\n  {\"question\": \"ok\"},\n  {\"question\": \"\"},\n  3\n]";
        let found = problems("q.json", text);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(
            found[0].contains("q.json:3:") && found[0].contains("empty"),
            "{found:?}"
        );
        assert!(
            found[1].contains("q.json:4:") && found[1].contains("number"),
            "{found:?}"
        );
    }

    #[test]
    fn csv_with_pipe_choices_and_answer_text() {
        let (_dir, path) = write(
            "q.csv",
            "id,question,choices,answer,category,source\nm1,\"Which, one?\",A | B | C,B,era,book\n"
                .as_bytes(),
        );
        let set = load(&path).unwrap();
        let q = &set.questions[0];
        assert_eq!(q.choices.as_ref().unwrap().len(), 3);
        assert_eq!(q.answer_index, Some(1));
        assert_eq!(q.extra.get("source"), Some(&Value::from("book")));
        assert_eq!(q.line, 2);
    }

    #[test]
    fn every_malformed_input_names_its_line() {
        let cases: Vec<(&str, &[u8], &str)> = vec![
            (
                "q.jsonl",
                b"{\"question\":\"a\"}\n{not json\n",
                "q.jsonl:2: invalid JSON",
            ),
            (
                "q.jsonl",
                b"{\"question\":\"a\"}\n{\"answer\":\"x\"}\n",
                "q.jsonl:2: missing required field",
            ),
            (
                "q.jsonl",
                b"{\"question\":\"  \"}\n",
                "q.jsonl:1: \"question\" is empty",
            ),
            (
                "q.jsonl",
                b"{\"id\":\"a\",\"question\":\"x\"}\n{\"id\":\"a\",\"question\":\"y\"}\n",
                "q.jsonl:2: duplicate id \"a\" (first used on line 1)",
            ),
            (
                "q.jsonl",
                b"{\"question\":\"ok\"}\n{\"question\":\"\xff\xfe\"}\n",
                "q.jsonl:2: invalid UTF-8",
            ),
            ("q.jsonl", b"[1]\n", "q.jsonl:1: expected a JSON object"),
            (
                "q.jsonl",
                b"{\"question\":\"ok\"}\n{\"question\":\"a\\u0000b\"}\n",
                "q.jsonl:2: \"question\" contains a NUL character",
            ),
            (
                "q.csv",
                b"id,question\n1,\"fine\"\n2,\"never closed\n3,lost\n",
                "q.csv:3: a quoted field opened here is never closed",
            ),
            (
                "q.csv",
                b"id,question,question\n1,a,b\n",
                "q.csv:1: column \"question\" appears twice",
            ),
            (
                "q.jsonl",
                b"{\"question\":\"x\",\"choices\":[\"a\",\"b\"],\"answer_index\":2}\n",
                "out of range",
            ),
            (
                "q.jsonl",
                b"{\"question\":\"x\",\"choices\":[\"a\",\"b\"],\"answer\":\"c\"}\n",
                "not one of the choices",
            ),
            (
                "q.jsonl",
                b"{\"question\":\"x\",\"answer_index\":0}\n",
                "without \"choices\"",
            ),
            (
                "q.jsonl",
                b"{\"question\":\"x\",\"choices\":\"a\"}\n",
                "must be an array",
            ),
            (
                "q.jsonl",
                b"{\"question\":\"x\",\"choices\":[\"a\",\"\",\"c\",\"d\"],\"answer_index\":2}\n",
                "q.jsonl:1: choice 2 is blank",
            ),
            (
                "q.csv",
                b"question,choices,answer_index\nx,\"[\"\"a\"\",null,\"\"c\"\"]\",2\n",
                "q.csv:2: choice 2 is null",
            ),
            (
                "q.csv",
                b"question,choices,answer_index\nx,a | | c,2\n",
                "q.csv:2: choice 2 is blank",
            ),
            (
                "q.jsonl",
                b"{\"question\":\"x\",\"id\":[1]}\n",
                "\"id\" must be",
            ),
            ("q.jsonl", b"", "no questions found"),
            (
                "q.csv",
                b"id,question\n1,a\n2,b,extra\n",
                "q.csv:3: invalid CSV row",
            ),
        ];
        for (name, content, expected) in cases {
            let found = problems(name, content);
            assert!(
                found.iter().any(|p| p.contains(expected)),
                "{name} {:?}: expected {expected:?} in {found:?}",
                String::from_utf8_lossy(content)
            );
        }
    }

    #[test]
    fn a_mapped_list_with_a_blank_item_is_refused_naming_the_line() {
        let (_dir, path) = write(
            "q.csv",
            b"query,options,gold\nQ1,\"[\"\"a\"\",\"\"b\"\"]\",1\nQ2,\"[\"\"a\"\",\"\"\"\",\"\"c\"\",\"\"d\"\"]\",2\n",
        );
        let mapping = mapping::from_args(
            Some("question=query,choices=options,answer=gold:index0"),
            None,
        )
        .unwrap();
        let error = load_mapped(&path, mapping.as_ref()).unwrap_err();
        match error.downcast_ref::<Error>() {
            Some(Error::InvalidQuestions(found)) => assert_eq!(
                found,
                &[format!(
                    "{}:3: column \"options\": choice 2 is blank; every choice must be non-empty text (a blank choice would move the answer key)",
                    path.display()
                )]
            ),
            other => panic!("expected InvalidQuestions, got {other:?}"),
        }
    }

    pub(crate) mod property {
        //! Mutated and truncated versions of valid question files: `load` never panics, never
        //! makes a large allocation, and either returns questions that hold the schema's
        //! promises or a typed error whose every message names the file.

        use super::*;
        use crate::alloc_probe::{largest_allocation, property_config, PARSE_ALLOCATION_LIMIT};
        use proptest::prelude::*;
        use proptest::sample::Index;
        use proptest::test_runner::{TestCaseError, TestRunner};

        const JSONL: &str = concat!(
            "\u{feff}{\"id\":\"q1\",\"question\":\"세종대왕이 만든 문자는?\",\"answer\":\"한글\",\"category\":\"조선\"}\n",
            "\n",
            "{\"question\":\"Q2\",\"choices\":[\"a\",\"b\",\"c\"],\"answer_index\":1,\"context\":\"ctx\"}\n",
            "{\"id\":3,\"question\":\"Q3\",\"choices\":[\"x\",\"y\"],\"answer\":\"y\",\"extra\":{\"n\":[1,2.5,null,true]}}\n",
        );
        const JSON: &str = concat!(
            "[\n",
            "  {\"id\":\"q1\",\"question\":\"세종대왕이 만든 문자는?\",\"answer\":\"한글\"},\n",
            "  {\"question\":\"Q2\",\"choices\":[\"a\",\"b\",\"c\"],\"answer_index\":1},\n",
            "  {\"id\":3,\"question\":\"Q3\",\"choices\":[1,\"y\"],\"answer\":\"y\",\"n\":{\"k\":[]}}\n",
            "]\n",
        );
        const CSV: &str = concat!(
            "id,question,answer,choices,answer_index,category\n",
            "q1,\"세종대왕이 만든 문자는?\",한글,,,조선\n",
            "q2,\"Q2, with a comma\",,a|b|c,1,\n",
            "q3,\"say \"\"y\"\"\",y,\"[\"\"x\"\",\"\"y\"\"]\",,\r\n",
        );

        /// Text that stresses a parser: huge and odd numbers, deep nesting, quotes, separators,
        /// NUL, a BOM, invalid UTF-8, long runs.
        fn snippet() -> impl Strategy<Value = Vec<u8>> {
            prop_oneof![
                Just(b"18446744073709551616".to_vec()),
                Just(b"18446744073709551615".to_vec()),
                Just(b"99999999999999999999999999999999999999".to_vec()),
                Just(b"-1".to_vec()),
                Just(b"1e999".to_vec()),
                Just(b"-0.0e-99999".to_vec()),
                Just(vec![b'['; 5000]),
                Just(b"{\"a\":".repeat(1000)),
                Just(vec![b'"'; 3]),
                Just(b"\"\"".to_vec()),
                Just(b",,,,".to_vec()),
                Just(b"|||".to_vec()),
                Just(b"\n".to_vec()),
                Just(b"\r\n".to_vec()),
                Just(b"\r".to_vec()),
                Just(b"\0".to_vec()),
                Just(b"\\u0000".to_vec()),
                Just(b"\\ud800".to_vec()),
                Just(b"\xEF\xBB\xBF".to_vec()),
                Just(b"\xff\xfe".to_vec()),
                Just(b"\xed\x9f".to_vec()),
                Just(vec![b'a'; 100_000]),
                Just(b"\"choices\":[".to_vec()),
                Just(b"\"answer_index\":".to_vec()),
                Just(b"\"id\":\"q1\",".to_vec()),
                Just(b"{\"question\":\"x\"}\n".repeat(200)),
                proptest::collection::vec(any::<u8>(), 0..64),
            ]
        }

        #[derive(Debug, Clone)]
        pub(crate) enum Mutation {
            Truncate(Index),
            Flip(Index, u8),
            Insert(Index, Vec<u8>),
            Replace(Index, usize, Vec<u8>),
            Tail(Index, Vec<u8>),
        }

        /// Byte mutations of a valid file (also used by the tokenizer.json property test).
        pub(crate) fn mutation() -> impl Strategy<Value = Mutation> {
            prop_oneof![
                any::<Index>().prop_map(Mutation::Truncate),
                (any::<Index>(), 1u8..=255).prop_map(|(i, m)| Mutation::Flip(i, m)),
                (any::<Index>(), snippet()).prop_map(|(i, s)| Mutation::Insert(i, s)),
                (any::<Index>(), 0usize..8, snippet())
                    .prop_map(|(i, n, s)| Mutation::Replace(i, n, s)),
                (
                    any::<Index>(),
                    proptest::collection::vec(any::<u8>(), 0..256)
                )
                    .prop_map(|(i, t)| Mutation::Tail(i, t)),
            ]
        }

        pub(crate) fn mutate(valid: &[u8], mutations: &[Mutation]) -> Vec<u8> {
            let mut bytes = valid.to_vec();
            for m in mutations {
                match m {
                    Mutation::Truncate(i) => bytes.truncate(i.index(bytes.len() + 1)),
                    Mutation::Flip(i, mask) if !bytes.is_empty() => {
                        let at = i.index(bytes.len());
                        bytes[at] ^= mask;
                    }
                    Mutation::Flip(..) => {}
                    Mutation::Insert(i, snippet) => {
                        let at = i.index(bytes.len() + 1);
                        bytes.splice(at..at, snippet.iter().copied());
                    }
                    Mutation::Replace(i, n, snippet) => {
                        let at = i.index(bytes.len() + 1);
                        let end = (at + n).min(bytes.len());
                        bytes.splice(at..end, snippet.iter().copied());
                    }
                    Mutation::Tail(i, tail) => {
                        bytes.truncate(i.index(bytes.len() + 1));
                        bytes.extend(tail);
                    }
                }
            }
            bytes
        }

        /// `load` on `bytes`: no panic, no allocation above the limit; questions that keep the
        /// schema's promises, or a typed error whose every message names the file.
        fn check_load(path: &Path, bytes: &[u8]) -> std::result::Result<(), TestCaseError> {
            // A fresh file each case: rewriting one in place makes ext4 flush it on close
            // (its replace-by-truncate heuristic), which turns thousands of cases into minutes.
            let _ = std::fs::remove_file(path);
            std::fs::write(path, bytes).unwrap();
            let (outcome, largest) = largest_allocation(|| load(path));
            prop_assert!(
                largest <= PARSE_ALLOCATION_LIMIT,
                "an allocation of {largest} bytes"
            );
            let name = path.display().to_string();
            match outcome {
                Ok(set) => {
                    prop_assert!(!set.questions.is_empty());
                    let mut ids = std::collections::HashSet::new();
                    for (index, q) in set.questions.iter().enumerate() {
                        prop_assert_eq!(q.ordinal, index + 1);
                        prop_assert!(ids.insert(q.id.clone()), "duplicate id {}", q.id);
                        prop_assert!(!q.question.trim().is_empty());
                        prop_assert!(!q.question.contains('\0') && !q.id.contains('\0'));
                        if let Some(choices) = &q.choices {
                            prop_assert!(choices.len() >= 2);
                            if let Some(i) = q.answer_index {
                                prop_assert_eq!(q.reference.as_ref(), Some(&choices[i]));
                            }
                        } else {
                            prop_assert!(q.answer_index.is_none());
                        }
                    }
                }
                Err(error) => match error.downcast_ref::<Error>() {
                    Some(Error::InvalidQuestions(problems)) => {
                        prop_assert!(!problems.is_empty());
                        for problem in problems {
                            prop_assert!(problem.contains(&name), "{problem}");
                        }
                    }
                    Some(Error::Usage(message)) => {
                        prop_assert!(message.contains(&name), "{message}")
                    }
                    _ => prop_assert!(false, "untyped error: {error:#}"),
                },
            }
            Ok(())
        }

        fn survives_mutations(file_name: &str, valid: &str) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join(file_name);
            std::fs::write(&path, valid).unwrap();
            let set = load(&path).unwrap();
            assert_eq!(set.questions.len(), 3, "the seed itself is valid");
            let mut runner = TestRunner::new(property_config(1000));
            runner
                .run(&proptest::collection::vec(mutation(), 1..5), |mutations| {
                    check_load(&path, &mutate(valid.as_bytes(), &mutations))
                })
                .unwrap();
        }

        #[test]
        fn property_jsonl_parser_survives_mutations() {
            survives_mutations("q.jsonl", JSONL);
        }

        #[test]
        fn property_json_array_parser_survives_mutations() {
            survives_mutations("q.json", JSON);
        }

        #[test]
        fn property_csv_parser_survives_mutations() {
            survives_mutations("q.csv", CSV);
        }
    }
}
