//! Telling peerd which messages were shown (MarkDisplayed), off the display
//! path: the display loop hands over each id right after the line was
//! written and flushed; a task sends them, batching whatever piled up.

use std::time::Duration;

use peerchat::v1 as pb;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::client::{ANSWER_TIMEOUT, Control, call};
use crate::output;

/// How long to wait, on the way out, for the last report to get through.
const FINISH_TIMEOUT: Duration = Duration::from_secs(2);

/// The reporting task and the way to feed it.
#[derive(Debug)]
pub(crate) struct Marker {
    tx: mpsc::UnboundedSender<String>,
    task: JoinHandle<()>,
}

impl Marker {
    /// Starts the reporting task on its own clone of the client.
    pub(crate) fn spawn(mut client: Control) -> Marker {
        let (tx, mut rx) = mpsc::unbounded_channel::<String>();
        let task = tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut ids = vec![first];
                while let Ok(id) = rx.try_recv() {
                    ids.push(id);
                }
                let request = pb::MarkDisplayedRequest { ids };
                let sent =
                    call("record what was shown", ANSWER_TIMEOUT, client.mark_displayed(request));
                if let Err(err) = sent.await {
                    output::note(&format!(
                        "warning: could not report messages as displayed: {err}"
                    ));
                }
            }
        });
        Marker { tx, task }
    }

    /// Reports message `id` as shown. Call only after it was written out.
    pub(crate) fn shown(&self, id: String) {
        // The task only ends after `finish`, so this cannot be lost.
        let _ = self.tx.send(id);
    }

    /// Sends what is left, waiting a bounded time.
    pub(crate) async fn finish(self) {
        drop(self.tx);
        let _ = tokio::time::timeout(FINISH_TIMEOUT, self.task).await;
    }
}
