//! One file of a view: its segments in order, and a reader that rebuilds
//! the whole file or a byte range of it.

use std::ops::Range;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::{BoxStream, StreamExt};
use sha2::Digest;

use super::FileEntry;
use crate::Result;
use crate::blobs::{ContentParts, read_range};
use crate::sql::LakeSession;

/// A piece of a file: bytes kept inline, or a range of a stored content.
#[derive(Debug, Clone)]
pub enum Segment {
    /// Header, padding or suffix bytes.
    Inline(Vec<u8>),
    /// `range` of the content with this sha256.
    Content {
        /// Content sha256.
        sha256: String,
        /// Bytes of the content.
        range: Range<u64>,
    },
}

impl Segment {
    pub(super) fn len(&self) -> u64 {
        match self {
            Segment::Inline(b) => b.len() as u64,
            Segment::Content { range, .. } => range.end - range.start,
        }
    }
}

/// One file and the segments that make it up.
#[derive(Debug, Clone)]
pub struct ViewFile {
    /// The manifest entry.
    pub entry: FileEntry,
    pub(super) segments: Vec<Segment>,
}

impl ViewFile {
    /// The segments covering `range` of the file, cut to it.
    pub fn segments(&self, range: Range<u64>) -> Vec<Segment> {
        let mut out = Vec::new();
        for (start, end, s) in self.segments_overlapping(&range) {
            let from = range.start.max(start) - start;
            let to = range.end.min(end) - start;
            out.push(match s {
                Segment::Inline(b) => Segment::Inline(b[from as usize..to as usize].to_vec()),
                Segment::Content { sha256, range: r } => Segment::Content {
                    sha256: sha256.clone(),
                    range: r.start + from..r.start + to,
                },
            });
        }
        out
    }

    /// The whole contents that bytes `range` of the file touch, in file
    /// order, each once: where its bytes begin within `range` (a file
    /// offset), its sha256 and its length.
    pub fn contents_touched(&self, range: Range<u64>) -> Vec<(u64, String, u64)> {
        let mut out: Vec<(u64, String, u64)> = Vec::new();
        for (start, _, s) in self.segments_overlapping(&range) {
            if let Segment::Content { sha256, range: r } = s
                && !out.iter().any(|(_, sha, _)| sha == sha256)
            {
                out.push((start.max(range.start), sha256.clone(), r.end));
            }
        }
        out
    }

    /// The segments that bytes `range` of the file overlap, with the file
    /// offsets where each starts and ends.
    fn segments_overlapping<'s>(
        &'s self,
        range: &'s Range<u64>,
    ) -> impl Iterator<Item = (u64, u64, &'s Segment)> + 's {
        self.segments
            .iter()
            .scan(0u64, |at, s| {
                let start = *at;
                *at += s.len();
                Some((start, *at, s))
            })
            .filter(move |(start, end, _)| *end > range.start && *start < range.end)
    }

    /// A reader of bytes `range` of the file, one content part at a time.
    pub fn reader<'a>(&self, session: &'a LakeSession, range: Range<u64>) -> FileReader<'a> {
        let pieces = futures::stream::iter(self.segments(range))
            .map(move |segment| -> BoxFuture<'a, Result<Piece>> {
                match segment {
                    Segment::Inline(b) => Box::pin(async move { Ok(Piece::Bytes(Bytes::from(b))) }),
                    Segment::Content { sha256, range }
                        if range.end - range.start <= PREFETCH_BYTES =>
                    {
                        Box::pin(async move {
                            Ok(Piece::Bytes(read_range(session, &sha256, range).await?))
                        })
                    }
                    Segment::Content { sha256, range } => {
                        Box::pin(async move { Ok(Piece::Large { sha256, range }) })
                    }
                }
            })
            .buffered(PREFETCH_SEGMENTS)
            .boxed();
        FileReader {
            session,
            pieces,
            current: None,
        }
    }
}

/// Segments a [`FileReader`] fetches ahead, so that small tensors' round
/// trips to an object store overlap instead of adding up.
const PREFETCH_SEGMENTS: usize = 8;
/// Contents up to this size are fetched ahead whole; larger ones stream part
/// by part when their turn comes (memory stays at about
/// `PREFETCH_SEGMENTS × PREFETCH_BYTES` plus one part).
const PREFETCH_BYTES: u64 = 4 << 20;

/// What a [`FileReader`] yields next: bytes, or a large content to stream.
enum Piece {
    Bytes(Bytes),
    Large { sha256: String, range: Range<u64> },
}

/// Reads a range of a file piece by piece: inline bytes, then decoded content
/// parts, with the next small contents fetched ahead (see
/// [`PREFETCH_SEGMENTS`]).
pub struct FileReader<'a> {
    session: &'a LakeSession,
    pieces: BoxStream<'a, Result<Piece>>,
    current: Option<ContentParts<'a>>,
}

impl FileReader<'_> {
    /// The next piece, or `None` at the end of the range.
    pub async fn next(&mut self) -> Result<Option<Bytes>> {
        loop {
            if let Some(parts) = self.current.as_mut() {
                if let Some(bytes) = parts.next().await? {
                    return Ok(Some(bytes));
                }
                self.current = None;
            }
            match self.pieces.next().await.transpose()? {
                None => return Ok(None),
                Some(Piece::Bytes(b)) => return Ok(Some(b)),
                Some(Piece::Large { sha256, range }) => {
                    self.current = Some(ContentParts::open(self.session, &sha256, range).await?);
                }
            }
        }
    }
}

/// Whether the content `sha256` of `len` bytes decodes, part by part as a
/// rebuild reads it, to bytes with that sha256. A range of a file has no
/// recorded hash of its own; checking each whole content it touches is how
/// a range is known to be right.
pub async fn content_intact(session: &LakeSession, sha256: &str, len: u64) -> Result<bool> {
    let mut parts = ContentParts::open(session, sha256, 0..len).await?;
    let mut hasher = sha2::Sha256::new();
    let mut n = 0u64;
    while let Some(bytes) = parts.next().await? {
        n += bytes.len() as u64;
        hasher.update(&bytes);
    }
    Ok(n == len && hex::encode(hasher.finalize()) == sha256)
}
