//! The download side of an ingest: ranges (or streams cut into chunks) read
//! concurrently and handed to the ingest loop in file order, as [`Msg`]s.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use futures::{StreamExt, stream};
use tokio::sync::mpsc;
use weightlake_connectors::http::{ChunkBuffer, HttpClient, RangeSink};

use super::state;
use super::{FileTask, Plan};
use crate::sql::LakeSession;

/// What the download side sends the ingest loop.
pub(super) enum Msg {
    Chunk {
        file: usize,
        index: i32,
        offset: u64,
        data: Bytes,
        reused: bool,
    },
    StreamEnd {
        file: usize,
        chunks: i32,
    },
    Failed {
        file: usize,
        error: String,
    },
}

/// Cuts one stream into chunks of `chunk_size` and sends them on. Offsets below
/// what was already sent (a restarted stream) are dropped.
struct StreamChunker {
    file: usize,
    chunk_size: u64,
    sent: u64,
    next_index: i32,
    buf: Vec<u8>,
    tx: mpsc::Sender<Msg>,
}

impl StreamChunker {
    async fn emit(&mut self) -> std::io::Result<()> {
        let data = Bytes::from(std::mem::take(&mut self.buf));
        let offset = self.sent;
        self.sent += data.len() as u64;
        let msg = Msg::Chunk {
            file: self.file,
            index: self.next_index,
            offset,
            data,
            reused: false,
        };
        self.next_index += 1;
        self.tx
            .send(msg)
            .await
            .map_err(|_| std::io::Error::other("ingest writer stopped"))
    }
}

impl RangeSink for StreamChunker {
    async fn write(&mut self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        let have = self.sent + self.buf.len() as u64;
        if offset + data.len() as u64 <= have {
            return Ok(());
        }
        let skip = have.saturating_sub(offset) as usize;
        let mut data = &data[skip..];
        while !data.is_empty() {
            let room = self.chunk_size as usize - self.buf.len();
            let n = room.min(data.len());
            self.buf.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.buf.len() as u64 == self.chunk_size {
                self.emit().await?;
            }
        }
        Ok(())
    }
}

/// Reads every planned chunk (`window` ranges in flight, reused chunks from
/// bronze) and then every stream, sending them on `tx` in file order; a file
/// that failed is skipped from then on.
#[allow(clippy::too_many_arguments)]
pub(super) async fn produce(
    http: HttpClient,
    session: Arc<LakeSession>,
    todo: Arc<Vec<FileTask>>,
    plans: Vec<Plan>,
    window: usize,
    chunk_size: u64,
    failed: Arc<Vec<AtomicBool>>,
    tx: mpsc::Sender<Msg>,
) {
    let mut ranged = Vec::new();
    let mut streams = Vec::new();
    // The last chunk of each file with chunks to download: once it has been
    // read (and every chunk before it), the file is checked unchanged.
    let mut last_read = std::collections::HashMap::new();
    for (file, plan) in plans.into_iter().enumerate() {
        match plan {
            Plan::Ranged { key, chunks } => {
                if chunks.iter().any(|(_, _, reuse)| !reuse)
                    && let Some((last, _, _)) = chunks.last()
                {
                    last_read.insert(file, *last);
                }
                let key = Arc::new(key);
                ranged.extend(
                    chunks
                        .into_iter()
                        .map(|(i, r, reuse)| (file, key.clone(), i, r, reuse)),
                );
            }
            Plan::Stream { key } => streams.push((file, key)),
        }
    }
    let results = stream::iter(ranged)
        .map(|(file, key, index, range, reuse)| {
            let (http, session, todo, failed) = (&http, &session, &todo, &failed);
            async move {
                if failed[file].load(Ordering::Relaxed) {
                    return (file, index, range.start, Err(None), reuse);
                }
                let data = if reuse {
                    state::read_chunk(session, &key, index)
                        .await
                        .map(Bytes::from)
                        .map_err(|e| Some(e.to_string()))
                } else {
                    let mut buf = ChunkBuffer::new(&range);
                    todo[file]
                        .file
                        .read_range(http, range.clone(), &mut buf)
                        .await
                        .map(|()| buf.into_bytes())
                        .map_err(|e| Some(e.to_string()))
                };
                (file, index, range.start, data, reuse)
            }
        })
        .buffered(window);
    futures::pin_mut!(results);
    while let Some((file, index, offset, data, reused)) = results.next().await {
        // A file rewritten while it was read would be kept as a mix of two
        // versions: check it once all its chunks are in.
        let data = match data {
            Ok(d) if last_read.get(&file) == Some(&index) => {
                match todo[file].file.check_unchanged(&http).await {
                    Ok(()) => Ok(d),
                    Err(e) => Err(Some(e.to_string())),
                }
            }
            other => other,
        };
        let msg = match data {
            Ok(data) => Msg::Chunk {
                file,
                index,
                offset,
                data,
                reused,
            },
            Err(Some(error)) => {
                failed[file].store(true, Ordering::Relaxed);
                Msg::Failed { file, error }
            }
            Err(None) => continue,
        };
        if tx.send(msg).await.is_err() {
            return;
        }
    }
    for (file, _key) in streams {
        let mut chunker = StreamChunker {
            file,
            chunk_size,
            sent: 0,
            next_index: 0,
            buf: Vec::new(),
            tx: tx.clone(),
        };
        let target = match &todo[file].file.location {
            weightlake_connectors::source::FileLocation::Http(t) => t.clone(),
            weightlake_connectors::source::FileLocation::Store { .. } => {
                let _ = tx
                    .send(Msg::Failed {
                        file,
                        error: "object has no size".into(),
                    })
                    .await;
                continue;
            }
        };
        let result = http
            .fetch_stream(&target, todo[file].file.size, &mut chunker)
            .await;
        let msg = match result {
            Ok(_) => match chunker.emit_tail().await {
                Ok(chunks) => Msg::StreamEnd { file, chunks },
                Err(e) => Msg::Failed {
                    file,
                    error: e.to_string(),
                },
            },
            Err(e) => Msg::Failed {
                file,
                error: e.to_string(),
            },
        };
        if tx.send(msg).await.is_err() {
            return;
        }
    }
}

impl StreamChunker {
    /// Send the last partial chunk (or one empty chunk for an empty file) and
    /// return the number of chunks.
    async fn emit_tail(&mut self) -> std::io::Result<i32> {
        if !self.buf.is_empty() || self.next_index == 0 {
            self.emit().await?;
        }
        Ok(self.next_index)
    }
}
