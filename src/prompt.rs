//! How a question becomes the text the model is asked: context, question, numbered choices and
//! an instruction in the question's language. The chat template around it is the engine's; the
//! tokens are prepared once per run in `run::prepare`.

use crate::config::McContinuation;
use crate::dataset::{contains_hangul, Question};

/// Most choices letter labels can name (A to Z).
pub const MAX_LETTER_CHOICES: usize = 26;

/// The passage (if any), a blank line, and the question.
fn passage_and_question(question: &Question) -> String {
    let mut message = String::new();
    if let Some(context) = &question.context {
        message.push_str(context.trim());
        message.push_str("\n\n");
    }
    message.push_str(question.question.trim());
    message
}

/// The user message for `question` (Korean instruction when it contains Hangul, else English).
pub fn user_message(question: &Question) -> String {
    let korean = contains_hangul(&question.question);
    let mut message = passage_and_question(question);
    if let Some(choices) = &question.choices {
        message.push('\n');
        for (index, choice) in choices.iter().enumerate() {
            message.push_str(&format!("\n{}. {}", index + 1, choice.trim()));
        }
        message.push_str(if korean {
            "\n\n정답의 번호를 고르고 그 내용을 답하세요."
        } else {
            "\n\nAnswer with the number of the correct choice and its text."
        });
    }
    message
}

/// The user message for scoring a multiple-choice question by log-likelihood, and the
/// continuation scored after the prompt for each choice:
/// - `Letter`: the choices listed as `A. ...`, `B. ...` and an instruction to answer with the
///   letter; each choice is scored as its letter (the form of KMMLU and MMLU in
///   lm-evaluation-harness);
/// - `Text`: the question alone; each choice is scored as its own text (HAE-RAE, HellaSwag).
///
/// `None` when the question has no choices, or more than [`MAX_LETTER_CHOICES`] for letters.
pub fn loglik_message(question: &Question, style: McContinuation) -> Option<(String, Vec<String>)> {
    let choices = question.choices.as_ref()?;
    let korean = contains_hangul(&question.question);
    let mut message = passage_and_question(question);
    match style {
        McContinuation::Text => Some((
            message,
            choices.iter().map(|c| c.trim().to_string()).collect(),
        )),
        McContinuation::Letter => {
            if choices.len() > MAX_LETTER_CHOICES {
                return None;
            }
            let labels: Vec<String> = (b'A'..=b'Z')
                .take(choices.len())
                .map(|b| char::from(b).to_string())
                .collect();
            message.push('\n');
            for (label, choice) in labels.iter().zip(choices) {
                message.push_str(&format!("\n{label}. {}", choice.trim()));
            }
            message.push_str(if korean {
                "\n\n정답의 기호만 답하세요."
            } else {
                "\n\nAnswer with the letter of the correct choice."
            });
            Some((message, labels))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Map;

    #[test]
    fn user_message_numbers_choices_in_the_question_language() {
        let question = Question {
            id: "1".into(),
            ordinal: 1,
            line: 1,
            question: "수도는?".into(),
            reference: None,
            choices: Some(vec!["서울".into(), "부산".into()]),
            answer_index: None,
            category: None,
            context: Some("지문".into()),
            extra: Map::new(),
        };
        let message = user_message(&question);
        assert!(
            message.starts_with("지문\n\n수도는?\n\n1. 서울\n2. 부산"),
            "{message}"
        );
        assert!(message.contains("번호"));
        let english = Question {
            question: "Capital?".into(),
            context: None,
            ..question
        };
        assert!(user_message(&english).contains("Answer with the number"));
    }

    #[test]
    fn loglik_letters_list_the_choices_and_score_the_labels_text_scores_the_choices() {
        let question = Question {
            id: "1".into(),
            question: "수도는?".into(),
            choices: Some(vec![" 서울 ".into(), "부산".into(), "대구".into()]),
            ..Default::default()
        };
        let (message, labels) = loglik_message(&question, McContinuation::Letter).unwrap();
        assert_eq!(labels, ["A", "B", "C"]);
        assert!(
            message.starts_with("수도는?\n\nA. 서울\nB. 부산\nC. 대구\n\n"),
            "{message}"
        );
        let (message, texts) = loglik_message(&question, McContinuation::Text).unwrap();
        assert_eq!(message, "수도는?");
        assert_eq!(texts, ["서울", "부산", "대구"]);
        let many = Question {
            choices: Some((0..27).map(|i| i.to_string()).collect()),
            ..question.clone()
        };
        assert!(loglik_message(&many, McContinuation::Letter).is_none());
        assert!(loglik_message(&many, McContinuation::Text).is_some());
        let free = Question {
            choices: None,
            ..question
        };
        assert!(loglik_message(&free, McContinuation::Text).is_none());
    }
}
