//! The echo model's tokenizer: a GPT-2-style pre-tokenizer used as the whole vocabulary.
//!
//! A token is, in order of preference: an optional single space followed by a run of letters,
//! a run of digits, or a run of other non-space symbols; otherwise a run of whitespace. The
//! tokens of a text concatenate back to exactly that text, so the echo model's completion is the
//! sequence of tokens it streams, and its usage counts are exact for its own vocabulary.

/// Splits `text` into tokens (see [the echo model](crate::echo)).
///
/// ```
/// use chatgate::echo::tokenize;
/// let t: Vec<&str> = tokenize("Hello, world 42!").collect();
/// assert_eq!(t, ["Hello", ",", " world", " 42", "!"]);
/// ```
pub fn tokenize(text: &str) -> Tokens<'_> {
    Tokens { rest: text }
}

/// Number of tokens in `text`.
pub fn count_tokens(text: &str) -> u64 {
    tokenize(text).count() as u64
}

/// Iterator returned by [`tokenize`].
#[derive(Clone, Debug)]
pub struct Tokens<'a> {
    rest: &'a str,
}

#[derive(PartialEq, Eq, Clone, Copy)]
enum Class {
    Letter,
    Digit,
    Symbol,
    Space,
}

fn class(c: char) -> Class {
    if c.is_alphabetic() {
        Class::Letter
    } else if c.is_numeric() {
        Class::Digit
    } else if c.is_whitespace() {
        Class::Space
    } else {
        Class::Symbol
    }
}

impl<'a> Iterator for Tokens<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let s = self.rest;
        let mut chars = s.char_indices().peekable();
        let (_, first) = chars.next()?;
        let mut start_class = class(first);
        // " word": a single leading space joins the run that follows it.
        if first == ' '
            && let Some(&(_, c)) = chars.peek()
            && class(c) != Class::Space
        {
            start_class = class(c);
            chars.next();
        }
        let mut end = s.len();
        for (i, c) in chars {
            let k = class(c);
            let boundary = if start_class == Class::Space {
                // Whitespace runs leave their last space to the next word.
                k != Class::Space
                    || (c == ' '
                        && s[i + 1..]
                            .chars()
                            .next()
                            .is_some_and(|n| class(n) != Class::Space))
            } else {
                k != start_class
            };
            if boundary {
                end = i;
                break;
            }
        }
        let (tok, rest) = s.split_at(end);
        self.rest = rest;
        Some(tok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_concatenate_to_the_text() {
        for text in [
            "",
            "hi",
            "Hello, world!",
            "  two  spaces",
            "tabs\tand\nnewlines \n x",
            "émoji 😀 ok",
            "a1b2 3.14",
        ] {
            let joined: String = tokenize(text).collect();
            assert_eq!(joined, text);
            assert!(tokenize(text).all(|t| !t.is_empty()));
        }
    }

    #[test]
    fn splits_like_a_pretokenizer() {
        let t: Vec<&str> = tokenize("say  hi 3.14").collect();
        assert_eq!(t, ["say", " ", " hi", " 3", ".", "14"]);
        assert_eq!(count_tokens("hi"), 1);
        assert_eq!(count_tokens(""), 0);
    }
}
