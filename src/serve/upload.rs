//! Uploads (`POST /import`, `POST /validate`): the multipart form is read as it arrives, the file written
//! straight to the operation's folder (never whole in memory), under the size limit (413 beyond it) and
//! the cap on uploads at once (429). The client's file name is kept only as a plain name, for its
//! extension and for messages.

use std::path::{Path, PathBuf};

use axum::extract::Multipart;
use axum::http::StatusCode;
use tokio::io::AsyncWriteExt;

use super::error::ApiError;
use super::plan::ImportOptions;

/// The most a text field (`dataType`, `options`) may hold.
const MAX_FIELD: usize = 64 * 1024;

/// How much of a refused upload is read and thrown away before the answer goes out. A server that answers
/// while the client is still sending, and then closes, makes the client's TCP stack drop the answer (the
/// unread bytes turn the close into a reset): reading the rest lets the client see its 413. Beyond this the
/// connection is closed unread, so a huge upload cannot keep the server busy.
pub const DRAIN_MAX: u64 = 16 << 20;

/// A received form.
#[derive(Debug)]
pub struct Form {
    /// Where the file is.
    pub path: PathBuf,
    /// The client's file name, as a plain name (for messages and its extension).
    pub name: String,
    /// Its size.
    pub bytes: u64,
    /// The `dataType` field (default `auto-detect`).
    pub data_type: String,
    /// The `options` field, parsed.
    pub options: ImportOptions,
}

/// 413 for an upload over `limit`.
pub fn too_large(limit: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("the upload is larger than this server's limit of {limit} bytes (max_upload_size)"),
    )
}

/// A client's file name as a plain name: its last path part, characters other than letters, digits, `.`,
/// `-` and `_` replaced, no leading dot, at most 100 characters.
pub fn plain_name(name: Option<&str>) -> String {
    let last = name
        .unwrap_or_default()
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or_default();
    let cleaned: String = last
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let cleaned = cleaned.trim_start_matches('.');
    let cut: String = cleaned
        .chars()
        .rev()
        .take(100)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    if cut.is_empty() {
        "upload".to_owned()
    } else {
        cut
    }
}

/// Reads the form into `dir` (the file goes to `dir/<name>`).
pub async fn receive(mut form: Multipart, dir: &Path, limit: u64) -> Result<Form, ApiError> {
    let bad = |e: axum::extract::multipart::MultipartError| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            too_large(limit)
        } else {
            ApiError::bad_request(format!(
                "the multipart form cannot be read: {}",
                e.body_text()
            ))
        }
    };
    let mut file: Option<(PathBuf, String, u64)> = None;
    let mut data_type: Option<String> = None;
    let mut options: Option<String> = None;
    while let Some(mut field) = form.next_field().await.map_err(bad)? {
        let name = field.name().unwrap_or_default().to_owned();
        match name.as_str() {
            "file" if file.is_none() => {
                let plain = plain_name(field.file_name());
                let path = dir.join(&plain);
                let mut out = tokio::fs::File::create(&path)
                    .await
                    .map_err(ApiError::internal)?;
                let mut bytes = 0u64;
                while let Some(chunk) = field.chunk().await.map_err(bad)? {
                    bytes += chunk.len() as u64;
                    if bytes > limit {
                        let drained = discard_field(&mut field, DRAIN_MAX).await;
                        drop(field);
                        discard_form(&mut form, DRAIN_MAX.saturating_sub(drained)).await;
                        return Err(too_large(limit));
                    }
                    out.write_all(&chunk).await.map_err(ApiError::internal)?;
                }
                out.flush().await.map_err(ApiError::internal)?;
                out.sync_data().await.map_err(ApiError::internal)?;
                file = Some((path, plain, bytes));
            }
            "dataType" | "options" => {
                let mut text = Vec::new();
                while let Some(chunk) = field.chunk().await.map_err(bad)? {
                    text.extend_from_slice(&chunk);
                    if text.len() > MAX_FIELD {
                        return Err(ApiError::bad_request(format!(
                            "the form field {name} is longer than {MAX_FIELD} bytes"
                        )));
                    }
                }
                let text = String::from_utf8(text).map_err(|_| {
                    ApiError::bad_request(format!("the form field {name} is not UTF-8 text"))
                })?;
                if name == "dataType" {
                    data_type = Some(text.trim().to_owned());
                } else {
                    options = Some(text);
                }
            }
            "file" => return Err(ApiError::bad_request("the form has more than one file")),
            other => {
                return Err(ApiError::bad_request(format!(
                    "the form field {other:?} is not one of file, dataType, options"
                )))
            }
        }
    }
    let (path, name, bytes) = file
        .ok_or_else(|| ApiError::bad_request("the form has no file field (-F file=@data.json)"))?;
    let options = match options.as_deref().map(str::trim) {
        None | Some("") => ImportOptions::default(),
        Some(text) => serde_json::from_str(text).map_err(|e| {
            ApiError::bad_request(format!("the form field options is not valid: {e}"))
        })?,
    };
    Ok(Form {
        path,
        name,
        bytes,
        data_type: data_type
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| "auto-detect".into()),
        options,
    })
}

/// Reads and drops the rest of a field, at most `max` bytes; how many it read.
async fn discard_field(field: &mut axum::extract::multipart::Field<'_>, max: u64) -> u64 {
    let mut read = 0u64;
    while read < max {
        match field.chunk().await {
            Ok(Some(chunk)) => read += chunk.len() as u64,
            _ => break,
        }
    }
    read
}

/// Reads and drops the rest of a form, at most `max` bytes (see [`DRAIN_MAX`]).
pub async fn discard_form(form: &mut Multipart, max: u64) {
    let mut read = 0u64;
    while read < max {
        match form.next_field().await {
            Ok(Some(mut field)) => read += discard_field(&mut field, max - read).await,
            _ => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_file_names_become_plain_names() {
        assert_eq!(plain_name(Some("../../etc/passwd")), "passwd");
        assert_eq!(plain_name(Some("C:\\x\\data 1.csv")), "data_1.csv");
        assert_eq!(plain_name(Some(".hidden.json")), "hidden.json");
        assert_eq!(plain_name(None), "upload");
        assert_eq!(plain_name(Some("..")), "upload");
    }
}
