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
        let chosen_index =
            extract_choice(&without_question_echo(answer, &question.question), choices);
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

/// Convert a choice label (`3`, `C`) to a 0-based index within `count` choices.
fn label_index(label: &str, count: usize) -> Option<usize> {
    let index = match label.chars().next()? {
        d @ '1'..='9' => d as usize - '1' as usize,
        l @ 'A'..='J' => l as usize - 'A' as usize,
        _ => return None,
    };
    (index < count).then_some(index)
}

/// Circled numbers (①–⑳, ❶–❿, ➀–➉, ➊–➓) become `(N)`, then NFKC (so `３번` is `3번`).
fn canonical_text(answer: &str) -> String {
    let mut text = String::with_capacity(answer.len());
    for c in answer.chars() {
        let number = match c {
            '\u{2460}'..='\u{2473}' => Some(c as u32 - 0x2460 + 1),
            '\u{2776}'..='\u{277F}' => Some(c as u32 - 0x2776 + 1),
            '\u{2780}'..='\u{2789}' => Some(c as u32 - 0x2780 + 1),
            '\u{278A}'..='\u{2793}' => Some(c as u32 - 0x278A + 1),
            _ => None,
        };
        match number {
            Some(n) => {
                text.push('(');
                text.push_str(&n.to_string());
                text.push(')');
            }
            None => text.push(c),
        }
    }
    text.nfkc().collect()
}

/// Remove an echo of the option list. An item is a label (`1.`, `(1)`, `1)`, `A.`, `1번`)
/// followed by a choice's text, or by the start of one when the text ends there (generation cut
/// off at `--max-tokens`). When items with two or more distinct labels appear, the model listed
/// the options: every item is removed, and so is a bare next label left at the very end
/// (`… 3. 분황사 모전 석탑 4`).
fn strip_echoed_choices(text: &str, choices: &[String]) -> String {
    static LABEL: OnceLock<Regex> = OnceLock::new();
    let label = regex(
        &LABEL,
        r"(?:^|[^0-9A-Za-z])([\(\[]?\s*([1-9]|[A-J])\s*(?:[\)\].:]|번))",
    );
    let mut spans: Vec<(usize, usize)> = Vec::new();
    let mut echoed: Vec<usize> = Vec::new();
    for captures in label.captures_iter(text) {
        let (Some(whole), Some(index)) =
            (captures.get(1), label_index(&captures[2], choices.len()))
        else {
            continue;
        };
        let after = &text[whole.end()..];
        let rest = after.trim_start();
        let skipped = after.len() - rest.len();
        // Its own choice first, then the longest other one that follows the label.
        let own = choices[index].trim();
        let complete = std::iter::once(own)
            .chain(choices.iter().map(|c| c.trim()))
            .filter(|c| !c.is_empty() && rest.starts_with(c))
            .map(str::len)
            .max();
        let end = match complete {
            Some(length) => whole.end() + skipped + length,
            None if choices
                .iter()
                .any(|c| c.trim().starts_with(rest.trim_end())) =>
            {
                text.len()
            }
            None => continue,
        };
        spans.push((whole.start(), end));
        echoed.push(index);
    }
    let highest = echoed.iter().copied().max();
    echoed.sort_unstable();
    echoed.dedup();
    if echoed.len() < 2 {
        return text.to_string();
    }
    let mut rest = String::with_capacity(text.len());
    let mut position = 0;
    for (start, end) in spans {
        if start >= position {
            rest.push_str(&text[position..start]);
            rest.push(' ');
        }
        position = position.max(end);
    }
    rest.push_str(&text[position.min(text.len())..]);
    static TRAILING: OnceLock<Regex> = OnceLock::new();
    let trailing = regex(&TRAILING, r"(?:^|\s)[\(\[]?\s*([1-9]|[A-J])\s*$");
    if let Some(captures) = trailing.captures(&rest) {
        let next = label_index(&captures[1], choices.len());
        if next.is_some() && next == highest.map(|h| h + 1) {
            let start = captures.get(0).map_or(rest.len(), |m| m.start());
            rest.truncate(start);
        }
    }
    rest
}

/// Extract the chosen option (0-based) from a free-text answer, or `None` when the answer names
/// no option or hedges between several.
///
/// The text is first made canonical: circled numbers (`③`, `❸`) become `(3)`, then Unicode
/// NFKC (full-width `３` becomes `3`). Then, first rule that gives an option in range wins:
/// 1. an explicit statement anywhere: `정답은 3번`, `정답: ②`, `답은 (2)입니다`, `The answer is (C)`,
///    `answer: B`, `Correct option: 2`, `The correct answer is: **B**`. A number must not run
///    on into more digits (`답: 1392년` names no option).
/// 2. an echoed option list is removed: two or more choices each written behind its own label
///    (`1. 주몽 2. 온조 3. 박…`, the model repeating the prompt); a truncated last item too. The
///    rules below read only what remains.
/// 3. two or more distinct `N번` (not `N번째`): a hedge, no answer.
/// 4. a leading label: `3.`, `3)`, `(3)`, `③`, `3번`, `C)`, `**2**`, or the whole answer a label.
/// 5. exactly one distinct `N번` anywhere.
/// 6. exactly one distinct bracketed label anywhere: `… 그래서 ②`, `I pick (B).`
/// 7. a choice's text inside the answer, when exactly one choice matches after dropping choices
///    that are contained in a longer matching choice (so `고구려` does not also count as `고려`).
pub fn extract_choice(answer: &str, choices: &[String]) -> Option<usize> {
    let count = choices.len();
    let text = canonical_text(answer);

    static EXPLICIT: OnceLock<Regex> = OnceLock::new();
    let explicit = regex(
        &EXPLICIT,
        r"(?i:정답|답|answer|correct\s+(?:option|choice))(?:\s*(?:은|는|이|:|=|으로는|으로|(?i:is|would\s+be|was)))*\s*(?i:option|choice|보기|number|no\.)?\s*[\(\[*]*\s*(?:([1-9])(?:$|[^0-9.,]|[.,](?:[^0-9]|$))|([A-J])(?:[\)\].:*,]|\s|$))",
    );
    if let Some(index) = explicit.captures_iter(&text).find_map(|c| {
        let label = c.get(1).or_else(|| c.get(2))?;
        label_index(label.as_str(), count)
    }) {
        return Some(index);
    }

    let text = strip_echoed_choices(&text, choices);

    static NUMBERED: OnceLock<Regex> = OnceLock::new();
    let numbered = regex(&NUMBERED, r"(^|[^0-9])([1-9])\s*번(째)?");
    let mut numbers: Vec<usize> = numbered
        .captures_iter(&text)
        .filter(|c| c.get(3).is_none())
        .filter_map(|c| label_index(&c[2], count))
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
        r"^\s*(?:\*\*)?\s*[\(\[]?\s*(?:([1-9])(?:\s*번(째)?|[\)\].:]|\*\*|\s|$)|([A-J])(?:[\)\].:]|\*\*|\s*$))",
    );
    if let Some(captures) = leading.captures(&text).filter(|c| c.get(2).is_none()) {
        let label = captures
            .get(1)
            .or_else(|| captures.get(3))
            .map(|m| m.as_str());
        if let Some(index) = label.and_then(|l| label_index(l, count)) {
            return Some(index);
        }
    }
    if let Some(&only) = numbers.first() {
        return Some(only);
    }

    static BRACKETED: OnceLock<Regex> = OnceLock::new();
    let bracketed = regex(&BRACKETED, r"[\(\[]\s*([1-9]|[A-J])\s*[\)\]]");
    let mut labels: Vec<usize> = bracketed
        .captures_iter(&text)
        .filter_map(|c| label_index(&c[1], count))
        .collect();
    labels.sort_unstable();
    labels.dedup();
    if labels.len() == 1 {
        return Some(labels[0]);
    }

    only_choice_text_in(&text, choices)
}

/// Rule 7 of [`extract_choice`]: the one choice whose text the answer contains, once choices
/// contained in a longer matching choice are dropped (`고구려` must not also count as `고려`).
fn only_choice_text_in(text: &str, choices: &[String]) -> Option<usize> {
    let answer_norm = normalize(text);
    let normalized: Vec<String> = choices.iter().map(|c| normalize(c)).collect();
    let matching: Vec<usize> = (0..choices.len())
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

/// The answer without a verbatim echo of the question (a small model often repeats it; a choice
/// named in the question is not the model's choice).
fn without_question_echo(answer: &str, question: &str) -> String {
    let question = question.trim();
    if question.chars().count() < 8 {
        return answer.to_string();
    }
    answer.replace(question, " ")
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
        let founders = choices(&["주몽", "온조", "박혁거세", "김수로"]);
        let revolts = choices(&[
            "이자겸의 난",
            "묘청의 서경 천도 운동",
            "무신 정변",
            "만적의 난",
        ]);
        let relics = choices(&["첨성대", "다보탑", "분황사 모전 석탑", "황룡사 9층 목탑"]);
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
            // Echoed option lists (real SmolLM2/Gemma outputs), complete and truncated.
            ("1. 주몽 2. 온조 3. 박", &founders, None),
            (
                "1. 주몽 2. 온조 3. 박혁거세 4. 김수로  고구려를 건국한 시조는 주몽입니다.",
                &founders,
                Some(0),
            ),
            (
                "① 고려 ② 고구려 ③ 백제 ④ 신라\n정답은 ③",
                &kingdoms,
                Some(2),
            ),
            (
                "A. Paris B. London C. Seoul D. Tokyo\nThe capital of South Korea is Seoul.",
                &english,
                Some(2),
            ),
            ("정답은 3입니다", &kings, Some(2)),
            ("답은 (2)입니다", &kings, Some(1)),
            ("**정답: 4번 (영조)**", &kings, Some(3)),
            ("답: 1392년에 건국되었습니다", &kings, None),
            ("2번째 왕은 정조입니다", &kings, Some(2)),
            ("세종대왕이 훈민정음을 만들었으므로 ②", &kings, Some(1)),
            ("The correct answer is: **B) London**", &english, Some(1)),
            (
                "The answer is B because London is the capital of the UK.",
                &english,
                Some(1),
            ),
            ("I pick (D).", &english, Some(3)),
            ("Answer: 1945", &english, None),
            ("Seoul", &english, Some(2)),
            ("Paris or London, I am not sure.", &english, None),
            ("1. 이자겸의 난\n2. 무", &revolts, None),
            (
                "1. 첨성대\n2. 다보탑\n3. 분황사 모전 석탑\n4",
                &relics,
                None,
            ),
            ("1. 첨성대\n2. 다보탑\n\n정답: 1. 첨성대", &relics, Some(0)),
            ("3. 분황사 모전 석탑", &relics, Some(2)),
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

    fn question(text: &str, reference: Option<&str>, choices: Option<Vec<String>>) -> Question {
        Question {
            id: "q".into(),
            ordinal: 1,
            line: 1,
            question: text.into(),
            reference: reference.map(str::to_string),
            answer_index: choices.as_ref().map(|_| 1),
            choices,
            category: None,
            context: None,
            extra: Default::default(),
        }
    }

    #[test]
    fn a_repeated_question_is_not_read_as_a_choice() {
        let q = question(
            "고려를 세운 왕건 다음 왕은 누구입니까?",
            Some("혜종"),
            Some(choices(&["왕건", "혜종", "정종", "광종"])),
        );
        let scores = score(&q, "고려를 세운 왕건 다음 왕은 누구입니까? 혜종입니다.");
        assert_eq!(scores.chosen_index, Some(1));
        assert_eq!(scores.score, Some(1.0));
        assert_eq!(score(&q, "정종").score, Some(0.0));
        assert_eq!(score(&q, "모르겠습니다").chosen_index, None);
    }

    #[test]
    fn exact_match_and_f1_on_known_pairs() {
        // (prediction, reference, exact match, F1) after KorQuAD normalisation.
        let cases: &[(&str, &str, bool, f64)] = &[
            ("1392년", "1392년", true, 1.0),
            ("세종 대왕", "세종대왕", true, 1.0),
            ("「세종대왕」.", "세종대왕", true, 1.0),
            ("Ｓｅｏｕｌ", "seoul", true, 1.0),
            ("서울\u{3000}특별시", "서울특별시", true, 1.0),
            // 조선태조이성계 (7) vs 이성계 (3): common 3, P 3/7, R 1 -> F1 0.6.
            ("조선 태조 이성계", "이성계", false, 0.6),
            // 세종 (2) vs 세종대왕 (4): P 1, R 1/2 -> 2/3.
            ("세종", "세종대왕", false, 2.0 / 3.0),
            // 고려 vs 고구려: common 고,려 -> P 1, R 2/3 -> 0.8.
            ("고려", "고구려", false, 0.8),
            ("왕건", "이성계", false, 0.0),
            // Repeated characters count once per occurrence: 가가가 vs 가 -> P 1/3, R 1 -> 0.5.
            ("가가가", "가", false, 0.5),
        ];
        for &(prediction, reference, exact, f1) in cases {
            let q = question("?", Some(reference), None);
            let scores = score(&q, prediction);
            assert_eq!(
                scores.exact_match,
                Some(exact),
                "{prediction:?} vs {reference:?}"
            );
            let got = scores.f1.unwrap();
            assert!(
                (got - f1).abs() < 1e-9,
                "{prediction:?} vs {reference:?}: F1 {got}"
            );
        }
    }
}
