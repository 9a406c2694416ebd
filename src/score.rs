//! Answer scoring.
//!
//! * Multiple choice: the chosen option is extracted from free text by the rules of
//!   [`extract_choice`]; score = 1 when it equals the reference, else 0.
//! * Short answer: text is normalised the KorQuAD way (Unicode NFKC, lower case, punctuation and
//!   whitespace removed); `exact_match` compares whole normalised strings, `f1` is character-level
//!   F1, and `score` = 1 when the normalised reference occurs inside the normalised answer
//!   (a generative model answers in sentences, so containment is the useful accuracy).

use crate::dataset::Question;
use regex::Regex;
use std::collections::HashMap;
use std::sync::OnceLock;
use unicode_normalization::UnicodeNormalization;

/// Scores of one answer; all `None` when the question has no reference.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scores {
    /// 1.0 correct, 0.0 wrong.
    pub score: Option<f64>,
    /// Short answers: normalised answer equals normalised reference.
    pub exact_match: Option<bool>,
    /// Short answers: character-level F1.
    pub f1: Option<f64>,
    /// Multiple choice: the 0-based choice extracted from the answer.
    pub chosen_index: Option<usize>,
}

/// Score `answer` against the question's reference.
pub fn score(question: &Question, answer: &str) -> Scores {
    if let Some(choices) = &question.choices {
        let chosen_index = extract_choice(answer, choices);
        return Scores {
            score: question
                .answer_index
                .map(|correct| f64::from(u8::from(chosen_index == Some(correct)))),
            exact_match: None,
            f1: None,
            chosen_index,
        };
    }
    let Some(reference) = &question.reference else {
        return Scores::default();
    };
    let answer_norm = normalize(answer);
    let reference_norm = normalize(reference);
    Scores {
        score: Some(f64::from(u8::from(
            !reference_norm.is_empty() && answer_norm.contains(&reference_norm),
        ))),
        exact_match: Some(answer_norm == reference_norm),
        f1: Some(char_f1(&answer_norm, &reference_norm)),
        chosen_index: None,
    }
}

/// KorQuAD-style normalisation: NFKC, lower case, punctuation/symbols and all whitespace removed.
pub fn normalize(text: &str) -> String {
    text.nfkc()
        .flat_map(char::to_lowercase)
        .filter(|c| !c.is_whitespace() && !is_punctuation(*c))
        .collect()
}

fn is_punctuation(c: char) -> bool {
    c.is_ascii_punctuation()
        || matches!(c,
            '\u{2000}'..='\u{206F}'   // general punctuation: quotes, dashes, ellipsis
            | '\u{3000}'..='\u{303F}' // CJK punctuation: 「」『』、。〈〉
            | '\u{FF01}'..='\u{FF0F}' | '\u{FF1A}'..='\u{FF20}' | '\u{FF3B}'..='\u{FF40}' | '\u{FF5B}'..='\u{FF65}'
            | '·' | '«' | '»' | '¿' | '¡')
}

/// Character-level F1 of two normalised strings.
pub fn char_f1(prediction: &str, reference: &str) -> f64 {
    let mut counts: HashMap<char, i64> = HashMap::new();
    for c in reference.chars() {
        *counts.entry(c).or_default() += 1;
    }
    let mut common = 0i64;
    for c in prediction.chars() {
        if let Some(n) = counts.get_mut(&c) {
            if *n > 0 {
                *n -= 1;
                common += 1;
            }
        }
    }
    if common == 0 {
        return 0.0;
    }
    let precision = common as f64 / prediction.chars().count() as f64;
    let recall = common as f64 / reference.chars().count() as f64;
    2.0 * precision * recall / (precision + recall)
}

fn regex(cell: &'static OnceLock<Regex>, pattern: &str) -> &'static Regex {
    // Patterns are constants of this module, checked by the unit tests.
    cell.get_or_init(|| Regex::new(pattern).expect("valid built-in pattern"))
}

/// Convert a choice label (`3`, `C`, `c`) to a 0-based index within `count` choices.
fn label_index(label: &str, count: usize) -> Option<usize> {
    let index = match label.chars().next()? {
        d @ '1'..='9' => d as usize - '1' as usize,
        l @ 'A'..='J' => l as usize - 'A' as usize,
        l @ 'a'..='j' => l as usize - 'a' as usize,
        _ => return None,
    };
    (index < count).then_some(index)
}

/// Extract the chosen option from a free-text answer. Rules, first match wins:
/// 1. a circled number (①–⑳, ❶–❿) anywhere: the first one;
/// 2. an explicit statement: `정답은 3번`, `답: ②`, `answer is (C)`, `correct option: 2`;
/// 3. two or more distinct `N번` mentioned (a hedge): no answer;
/// 4. a leading label: `3.`, `3)`, `(3)`, `3번`, `C)`, `**2**`, or the whole answer being a label;
/// 5. `N번` anywhere (one distinct N);
/// 6. a choice's text inside the answer, when exactly one choice matches after dropping choices
///    that are contained in a longer matching choice (so `고구려` does not also count as `고려`).
pub fn extract_choice(answer: &str, choices: &[String]) -> Option<usize> {
    let count = choices.len();
    for c in answer.chars() {
        let index = match c {
            '\u{2460}'..='\u{2473}' => c as usize - 0x2460,
            '\u{2776}'..='\u{277F}' => c as usize - 0x2776,
            _ => continue,
        };
        if index < count {
            return Some(index);
        }
    }
    let text = answer.nfkc().collect::<String>();
    static EXPLICIT: OnceLock<Regex> = OnceLock::new();
    let explicit = regex(
        &EXPLICIT,
        r"(?i:정답|답|answer|correct\s+(?:option|choice))\s*(?:은|는|:|(?i:is)|=|으로는|으로)?\s*(?i:option|choice|보기)?\s*[\(\[*]*\s*(?:([1-9])(?:\s*번|[\)\].:*,]|\s|$)|([A-J])(?:[\)\].:*,]|$))",
    );
    if let Some(index) = explicit.captures_iter(&text).find_map(|c| {
        let label = c.get(1).or_else(|| c.get(2))?;
        label_index(label.as_str(), count)
    }) {
        return Some(index);
    }
    static NUMBERED: OnceLock<Regex> = OnceLock::new();
    let numbered = regex(&NUMBERED, r"([1-9])\s*번");
    let mut numbers: Vec<usize> = numbered
        .captures_iter(&text)
        .filter_map(|c| label_index(&c[1], count))
        .collect();
    numbers.sort_unstable();
    numbers.dedup();
    if numbers.len() > 1 {
        // "1번과 2번 중에서 2번": a hedge between numbered options is no answer.
        return None;
    }
    static LEADING: OnceLock<Regex> = OnceLock::new();
    let leading = regex(
        &LEADING,
        r"^\s*(?:\*\*)?\s*[\(\[]?\s*(?:([1-9])(?:\s*번|[\)\].:]|\*\*|\s|$)|([A-J])(?:[\)\].:]|\*\*|\s*$))",
    );
    if let Some(captures) = leading.captures(&text) {
        let label = captures
            .get(1)
            .or_else(|| captures.get(2))
            .map(|m| m.as_str());
        if let Some(index) = label.and_then(|l| label_index(l, count)) {
            return Some(index);
        }
    }
    if let Some(&only) = numbers.first() {
        return Some(only);
    }
    let answer_norm = normalize(&text);
    let normalized: Vec<String> = choices.iter().map(|c| normalize(c)).collect();
    let matching: Vec<usize> = (0..count)
        .filter(|&i| !normalized[i].is_empty() && answer_norm.contains(&normalized[i]))
        .collect();
    let maximal: Vec<usize> = matching
        .iter()
        .copied()
        .filter(|&i| {
            !matching.iter().any(|&j| {
                j != i
                    && normalized[j].len() > normalized[i].len()
                    && normalized[j].contains(&normalized[i])
            })
        })
        .collect();
    (maximal.len() == 1).then(|| maximal[0])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn choices(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn multiple_choice_extraction_rules() {
        let kingdoms = choices(&["고려", "고구려", "백제", "신라"]);
        let kings = choices(&["태조", "세종", "정조", "영조"]);
        let english = choices(&["Paris", "London", "Seoul", "Tokyo"]);
        let cases: Vec<(&str, &Vec<String>, Option<usize>)> = vec![
            ("③", &kingdoms, Some(2)),
            ("정답은 ②입니다.", &kingdoms, Some(1)),
            ("답: 4번 신라", &kingdoms, Some(3)),
            ("정답은 3번입니다. 백제는...", &kingdoms, Some(2)),
            ("2. 세종", &kings, Some(1)),
            ("(4) 영조", &kings, Some(3)),
            ("**3** 정조", &kings, Some(2)),
            ("1) 태조 이성계", &kings, Some(0)),
            ("3", &kings, Some(2)),
            ("훈민정음을 만든 왕은 세종입니다.", &kings, Some(1)),
            ("고구려입니다.", &kingdoms, Some(1)),
            ("고려를 세운 사람은 왕건입니다.", &kingdoms, Some(0)),
            ("The answer is (C).", &english, Some(2)),
            ("Answer: B", &english, Some(1)),
            ("C) Seoul", &english, Some(2)),
            ("The capital of Korea is Seoul.", &english, Some(2)),
            ("Correct option: 4", &english, Some(3)),
            ("A. Paris", &english, Some(0)),
            ("A city in Asia, Tokyo.", &english, Some(3)),
            ("The answer is a city in Asia: Tokyo", &english, Some(3)),
            ("정답은 보기 1번 고려입니다", &kingdoms, Some(0)),
            ("세종과 정조 모두 아닙니다", &kings, None),
            ("모르겠습니다", &kings, None),
            ("⑦", &kings, None),
            ("9번", &kings, None),
            ("1번과 2번 중에서 2번", &kings, None),
            ("❷ 세종", &kings, Some(1)),
            ("정답：３번", &kings, Some(2)),
        ];
        for (answer, options, expected) in cases {
            assert_eq!(
                extract_choice(answer, options),
                expected,
                "answer {answer:?}"
            );
        }
    }

    #[test]
    fn normalization_and_f1_follow_korquad() {
        assert_eq!(normalize(" 세종 대왕! "), "세종대왕");
        assert_eq!(normalize("「훈민정음」"), "훈민정음");
        assert_eq!(normalize("ＡＢＣ"), "abc");
        assert_eq!(normalize("3·1 운동"), "31운동");
        assert_eq!(char_f1("세종대왕", "세종대왕"), 1.0);
        assert_eq!(char_f1("abc", "xyz"), 0.0);
        // prediction "세종" vs reference "세종대왕": precision 1, recall 0.5 -> F1 2/3.
        assert!((char_f1("세종", "세종대왕") - 2.0 / 3.0).abs() < 1e-9);
    }

    #[test]
    fn short_answer_scores() {
        let question = Question {
            id: "1".into(),
            ordinal: 1,
            line: 1,
            question: "?".into(),
            reference: Some("세종대왕".into()),
            choices: None,
            answer_index: None,
            category: None,
            context: None,
            extra: Default::default(),
        };
        let exact = score(&question, "세종대왕.");
        assert_eq!(exact.exact_match, Some(true));
        assert_eq!(exact.score, Some(1.0));
        let sentence = score(&question, "훈민정음을 반포한 왕은 세종대왕입니다.");
        assert_eq!(sentence.exact_match, Some(false));
        assert_eq!(sentence.score, Some(1.0));
        assert!(sentence.f1.unwrap() > 0.3 && sentence.f1.unwrap() < 1.0);
        let wrong = score(&question, "태조");
        assert_eq!(wrong.score, Some(0.0));
        let unreferenced = Question {
            reference: None,
            ..question
        };
        assert_eq!(score(&unreferenced, "x"), Scores::default());
    }
}
