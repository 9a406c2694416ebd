//! How a question becomes the text the model is asked: context, question, numbered choices and
//! an instruction in the question's language. The chat template around it is the engine's; the
//! tokens are prepared once per run in `run::prepare`.

use crate::dataset::{contains_hangul, Question};

/// The user message for `question` (Korean instruction when it contains Hangul, else English).
pub fn user_message(question: &Question) -> String {
    let korean = contains_hangul(&question.question);
    let mut message = String::new();
    if let Some(context) = &question.context {
        message.push_str(context.trim());
        message.push_str("\n\n");
    }
    message.push_str(question.question.trim());
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
}
