//! `purge`: every message of a DLQ deleted, once its name was typed to confirm.

use std::io::{BufRead, Write};

use crate::client::DeadLetterQueues;
use crate::error::{DlqError, is_missing_queue, sqs_error};
use crate::queue::{Depth, QueueRef};

impl DeadLetterQueues {
    /// Deletes every message of `dlq` (PurgeQueue) and returns its depth just before. SQS may take up to 60 seconds
    /// to finish, and allows one purge per queue every 60 seconds.
    pub async fn purge(&self, dlq: &QueueRef) -> Result<Depth, DlqError> {
        let depth = self.depth(dlq).await?;
        self.sqs.purge_queue().queue_url(&dlq.url).send().await.map_err(|err| match is_missing_queue(&err) {
            true => DlqError::QueueNotFound(dlq.name.clone()),
            false => sqs_error("PurgeQueue", &dlq.name, &err),
        })?;
        Ok(depth)
    }
}

/// Asks on `prompt` for the queue's name to be typed on `input` before a purge. `yes` skips the question;
/// without it, `is_terminal` must say that `input` is a terminal (nobody can answer otherwise).
pub fn confirm_purge(
    queue: &QueueRef,
    depth: Depth,
    yes: bool,
    is_terminal: bool,
    input: &mut impl BufRead,
    prompt: &mut impl Write,
) -> Result<(), DlqError> {
    if yes {
        return Ok(());
    }
    if !is_terminal {
        return Err(DlqError::NoTerminal { queue: queue.name.clone() });
    }
    write!(
        prompt,
        "This deletes every message of {} ({} visible, {} in flight) for good.\nType the queue name to confirm: ",
        queue.name, depth.visible, depth.in_flight
    )?;
    prompt.flush()?;
    let mut line = String::new();
    input.read_line(&mut line)?;
    let typed = line.trim();
    if typed == queue.name {
        Ok(())
    } else {
        Err(DlqError::NotConfirmed { queue: queue.name.clone(), typed: typed.to_owned() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purge_confirmation() {
        let queue = QueueRef { name: "q-dlq".into(), url: "http://h/1/q-dlq".into() };
        let depth = Depth { visible: 2, in_flight: 1 };
        let mut prompt = Vec::new();
        confirm_purge(&queue, depth, true, false, &mut &b""[..], &mut prompt).expect("--yes needs no terminal");
        assert!(prompt.is_empty());

        let refused = confirm_purge(&queue, depth, false, false, &mut &b"q-dlq\n"[..], &mut prompt);
        assert!(matches!(refused, Err(DlqError::NoTerminal { .. })), "{refused:?}");
        assert!(prompt.is_empty(), "nothing asked without a terminal");

        confirm_purge(&queue, depth, false, true, &mut &b"q-dlq\n"[..], &mut prompt).expect("confirmed");
        let asked = String::from_utf8(prompt.clone()).unwrap();
        assert!(asked.contains("q-dlq (2 visible, 1 in flight)") && asked.ends_with("to confirm: "), "{asked}");

        let wrong = confirm_purge(&queue, depth, false, true, &mut &b"yes\n"[..], &mut prompt);
        assert!(matches!(wrong, Err(DlqError::NotConfirmed { ref typed, .. }) if typed == "yes"), "{wrong:?}");
        let eof = confirm_purge(&queue, depth, false, true, &mut &b""[..], &mut prompt);
        assert!(matches!(eof, Err(DlqError::NotConfirmed { .. })), "{eof:?}");
    }
}
