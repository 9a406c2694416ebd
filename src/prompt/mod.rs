//! How a question becomes the text the model is asked: by default context, question, numbered
//! choices and an instruction in the question's language; with `--template` a prompt template
//! file ([`template`]). The chat template around it is the engine's; the tokens are prepared once
//! per run in `run::prepare`.

pub mod template;

use crate::config::{GenerationSettings, McContinuation, LETTER};
use crate::dataset::{contains_hangul, Question};
use crate::error::{usage, Error, Result};
use std::path::Path;
use template::PromptTemplate;

/// Most choices letter scoring scores by label (A to Z). Past Z a label is two letters, and the
/// log-likelihood of `AA` is at most that of its first letter `A`, so a longer label could never
/// win on the model's merit.
pub const MAX_LETTER_CHOICES: usize = 26;

/// The label of the choice at 0-based `index`, wherever labels are shown or scored: `A` to `Z`,
/// then `AA`, `AB`, … as spreadsheet columns are named, so labels never run out.
pub fn choice_label(index: usize) -> String {
    let mut letters = Vec::new();
    // Bijective base 26: 1 is A, 26 is Z, 27 is AA. u128 so that usize::MAX + 1 fits.
    let mut number = index as u128 + 1;
    while number > 0 {
        number -= 1;
        letters.push(char::from(b'A' + (number % 26) as u8));
        number /= 26;
    }
    letters.iter().rev().collect()
}

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
            let labels: Vec<String> = (0..choices.len()).map(choice_label).collect();
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

/// How the questions of a run become user messages: the default wording or the run's template,
/// and the label letter scoring scores for each choice (`A`, or `--mc-label`'s form such as
/// `(A)`).
#[derive(Debug, Clone, Default)]
pub struct Prompter {
    template: Option<PromptTemplate>,
    label: Option<String>,
    /// Whether choices are scored by their labels (log-likelihood scoring, letter continuations).
    scores_letters: bool,
}

/// Why a question with `count` choices cannot be scored by label, if it cannot.
fn too_many_for_letters(count: usize) -> std::result::Result<(), String> {
    if count <= MAX_LETTER_CHOICES {
        return Ok(());
    }
    Err(format!(
        "{count} choices are more than letter scoring can label (A to Z; a two-letter label such as AA would score below its first letter); use --mc-continuation text"
    ))
}

impl Prompter {
    /// The prompter of a run's settings (the template was checked when it was read).
    pub fn new(settings: &GenerationSettings) -> Result<Prompter> {
        let template = match &settings.template {
            Some(record) => Some(PromptTemplate::parse(&record.text).map_err(
                |(line, reason)| usage(format!("the run's prompt template, line {line}: {reason}")),
            )?),
            None => None,
        };
        Ok(Prompter {
            template,
            label: settings.mc_label.clone(),
            scores_letters: settings.mc_scoring.scores_choices()
                && settings.mc_continuation == McContinuation::Letter,
        })
    }

    /// The user message for generation: the template's rendering, else [`user_message`].
    pub fn user_message(&self, question: &Question) -> std::result::Result<String, String> {
        match &self.template {
            Some(template) => template.render(question),
            None => Ok(user_message(question)),
        }
    }

    /// The user message and continuations for log-likelihood scoring: with a template its
    /// rendering, each choice scored as its label (letter) or its text; else [`loglik_message`].
    pub fn loglik_message(
        &self,
        question: &Question,
        style: McContinuation,
    ) -> std::result::Result<(String, Vec<String>), String> {
        let choices = question.choices.as_deref().unwrap_or_default();
        if style == McContinuation::Letter {
            too_many_for_letters(choices.len())?;
        }
        let (message, continuations) = match &self.template {
            Some(template) => (
                template.render(question)?,
                choices.iter().map(|c| c.trim().to_string()).collect(),
            ),
            None => loglik_message(question, style).ok_or("the question has no choices")?,
        };
        if style == McContinuation::Text {
            return Ok((message, continuations));
        }
        let labels = (0..choices.len())
            .map(|index| match &self.label {
                Some(form) => form.replace(LETTER, &choice_label(index)),
                None => choice_label(index),
            })
            .collect();
        Ok((message, labels))
    }

    /// Every question's user message renders, and with letter scoring every question's choices
    /// have labels it can score: a template that asks for what a question lacks, or a question
    /// with more than [`MAX_LETTER_CHOICES`] choices scored by letter, is an input error naming
    /// the question file's line, found before anything is written.
    pub fn check(&self, path: &Path, questions: &[Question]) -> Result<()> {
        let problems: Vec<String> = questions
            .iter()
            .filter_map(|q| {
                let count = q.choices.as_ref().map_or(0, Vec::len);
                let scored = if self.scores_letters {
                    too_many_for_letters(count)
                } else {
                    Ok(())
                };
                scored
                    .and_then(|()| self.user_message(q).map(drop))
                    .err()
                    .map(|reason| format!("{}:{}: {reason}", path.display(), q.line))
            })
            .collect();
        if problems.is_empty() {
            return Ok(());
        }
        Err(Error::InvalidQuestions(problems).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{McScoring, TemplateRecord};
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
    fn labels_run_past_z_as_spreadsheet_columns_do() {
        let labels: Vec<String> = [0, 1, 25, 26, 27, 51, 52, 701, 702, 18_277, 18_278]
            .into_iter()
            .map(choice_label)
            .collect();
        assert_eq!(
            labels,
            ["A", "B", "Z", "AA", "AB", "AZ", "BA", "ZZ", "AAA", "ZZZ", "AAAA"]
        );
        assert_eq!(choice_label(usize::MAX).len(), 14);
    }

    fn thirty_choices() -> Question {
        Question {
            id: "q30".into(),
            line: 7,
            question: "Which?".into(),
            choices: Some((1..=30).map(|n| format!("c{n}")).collect()),
            answer_index: Some(28),
            reference: Some("c29".into()),
            ..Default::default()
        }
    }

    #[test]
    fn a_template_shows_every_choice_and_letter_scoring_refuses_more_than_z_naming_the_line() {
        let template = |scoring, continuation| GenerationSettings {
            template: Some(TemplateRecord {
                sha256: String::new(),
                text: "{{question}}\n{{choices}}".into(),
            }),
            mc_scoring: scoring,
            mc_continuation: continuation,
            ..Default::default()
        };
        let question = thirty_choices();
        let path = Path::new("q.jsonl");
        let generate =
            Prompter::new(&template(McScoring::Generate, McContinuation::Letter)).unwrap();
        generate
            .check(path, std::slice::from_ref(&question))
            .unwrap();
        let message = generate.user_message(&question).unwrap();
        assert!(message.contains("\nAC. c29\nAD. c30"), "{message}");
        let text = Prompter::new(&template(McScoring::Loglik, McContinuation::Text)).unwrap();
        text.check(path, std::slice::from_ref(&question)).unwrap();
        let (message, continuations) = text
            .loglik_message(&question, McContinuation::Text)
            .unwrap();
        assert!(message.contains("\nAC. c29"), "{message}");
        assert_eq!(continuations[28], "c29");
        let letters = Prompter::new(&template(McScoring::Loglik, McContinuation::Letter)).unwrap();
        let error = letters
            .check(path, std::slice::from_ref(&question))
            .unwrap_err();
        match error.downcast_ref::<Error>() {
            Some(Error::InvalidQuestions(problems)) => {
                assert_eq!(problems.len(), 1);
                assert!(
                    problems[0].starts_with(
                        "q.jsonl:7: 30 choices are more than letter scoring can label"
                    ),
                    "{problems:?}"
                );
            }
            other => panic!("expected InvalidQuestions, got {other:?}"),
        }
        let both = Prompter::new(&GenerationSettings {
            mc_scoring: McScoring::Both,
            ..Default::default()
        })
        .unwrap();
        assert!(both.check(path, &[question]).is_err());
    }

    #[test]
    fn letter_scoring_scores_the_labels_the_prompt_shows() {
        let question = Question {
            choices: Some((1..=26).map(|n| format!("c{n}")).collect()),
            ..thirty_choices()
        };
        let labelled = Prompter::new(&GenerationSettings {
            template: Some(TemplateRecord {
                sha256: String::new(),
                text: "{{choices}}".into(),
            }),
            mc_scoring: McScoring::Loglik,
            mc_label: Some(format!("({LETTER})")),
            ..Default::default()
        })
        .unwrap();
        let (message, labels) = labelled
            .loglik_message(&question, McContinuation::Letter)
            .unwrap();
        for (index, label) in labels.iter().enumerate() {
            let shown = choice_label(index);
            assert_eq!(label, &format!("({shown})"));
            assert!(message.contains(&format!("{shown}. c{}", index + 1)));
        }
        let (message, labels) = loglik_message(&question, McContinuation::Letter).unwrap();
        assert_eq!(labels[25], "Z");
        assert!(message.contains("\nZ. c26\n"), "{message}");
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
