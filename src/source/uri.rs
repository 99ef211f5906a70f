//! Parsing a source URI into the backend it names: a local directory, an S3
//! bucket and prefix, or an HDFS namenode and path.

use std::path::PathBuf;

use super::SourceError;

/// Where a source root lives, as parsed from its URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SourceUri {
    /// An absolute local directory.
    Local { root: PathBuf },
    /// `s3://bucket/prefix` (`s3a://` is accepted as a synonym, as Hadoop
    /// users write it). `prefix` has no leading or trailing `/`; empty for
    /// the bucket root.
    S3 {
        scheme: String,
        bucket: String,
        prefix: String,
    },
    /// `hdfs://authority/path` (or `viewfs://`). `path` has no leading or
    /// trailing `/`.
    Hdfs {
        scheme: String,
        authority: String,
        path: String,
    },
}

impl SourceUri {
    pub(crate) fn parse(uri: &str) -> Result<SourceUri, SourceError> {
        let invalid = |reason: &str| SourceError::InvalidUri {
            uri: uri.to_string(),
            reason: reason.to_string(),
        };
        if uri.trim().is_empty() {
            return Err(invalid("empty"));
        }
        let Some((scheme, rest)) = uri.split_once("://") else {
            // A plain path; relative ones are taken from the working
            // directory at startup, as a shell user would expect.
            let root = std::path::absolute(uri)
                .map_err(|e| invalid(&format!("cannot make the path absolute: {e}")))?;
            return Ok(SourceUri::Local { root });
        };
        match scheme.to_ascii_lowercase().as_str() {
            "file" => {
                let url = url::Url::parse(uri).map_err(|e| invalid(&e.to_string()))?;
                let root = url
                    .to_file_path()
                    .map_err(|()| invalid("not a local file URL (use file:///absolute/path)"))?;
                Ok(SourceUri::Local { root })
            }
            scheme @ ("s3" | "s3a") => {
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                if bucket.is_empty() {
                    return Err(invalid("no bucket name (expected s3://bucket/prefix)"));
                }
                if bucket.contains(['?', '#']) || prefix.contains(['?', '#']) {
                    return Err(invalid("query strings and fragments are not supported"));
                }
                Ok(SourceUri::S3 {
                    scheme: scheme.to_string(),
                    bucket: bucket.to_string(),
                    prefix: prefix.trim_matches('/').to_string(),
                })
            }
            scheme @ ("hdfs" | "viewfs") => {
                let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
                if authority.is_empty() {
                    return Err(invalid("no namenode (expected hdfs://namenode:port/path)"));
                }
                Ok(SourceUri::Hdfs {
                    scheme: scheme.to_string(),
                    authority: authority.to_string(),
                    path: path.trim_matches('/').to_string(),
                })
            }
            other => Err(invalid(&format!(
                "unsupported scheme {other:?} (use a path, file://, s3:// or hdfs://)"
            ))),
        }
    }

    /// How the root is shown to users, without a trailing `/`.
    pub(crate) fn display_base(&self) -> String {
        match self {
            SourceUri::Local { root } => {
                let text = root.display().to_string();
                text.trim_end_matches('/').to_string()
            }
            SourceUri::S3 {
                scheme,
                bucket,
                prefix,
            } => join_display(&format!("{scheme}://{bucket}"), prefix),
            SourceUri::Hdfs {
                scheme,
                authority,
                path,
            } => join_display(&format!("{scheme}://{authority}"), path),
        }
    }
}

fn join_display(base: &str, path: &str) -> String {
    if path.is_empty() {
        base.to_string()
    } else {
        format!("{base}/{path}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s3(bucket: &str, prefix: &str) -> SourceUri {
        SourceUri::S3 {
            scheme: "s3".into(),
            bucket: bucket.into(),
            prefix: prefix.into(),
        }
    }

    #[test]
    fn local_forms() {
        let abs = SourceUri::parse("/data/src/").unwrap();
        assert_eq!(
            abs,
            SourceUri::Local {
                root: "/data/src/".into()
            }
        );
        assert_eq!(abs.display_base(), "/data/src");
        let file = SourceUri::parse("file:///data/my%20src").unwrap();
        assert_eq!(
            file,
            SourceUri::Local {
                root: "/data/my src".into()
            }
        );
        let SourceUri::Local { root } = SourceUri::parse("rel/dir").unwrap() else {
            panic!("not local");
        };
        assert!(root.is_absolute() && root.ends_with("rel/dir"), "{root:?}");
        assert_eq!(
            SourceUri::parse("/").unwrap().display_base(),
            "",
            "the filesystem root displays as empty so joins give /db"
        );
        assert!(SourceUri::parse("file://otherhost/x").is_err());
    }

    #[test]
    fn s3_forms() {
        assert_eq!(SourceUri::parse("s3://b").unwrap(), s3("b", ""));
        assert_eq!(SourceUri::parse("s3://b/").unwrap(), s3("b", ""));
        assert_eq!(SourceUri::parse("s3://b/p/q/").unwrap(), s3("b", "p/q"));
        assert_eq!(
            SourceUri::parse("s3://b/p/q/").unwrap().display_base(),
            "s3://b/p/q"
        );
        assert_eq!(SourceUri::parse("s3://b").unwrap().display_base(), "s3://b");
        assert!(matches!(
            SourceUri::parse("s3a://b/p").unwrap(),
            SourceUri::S3 { scheme, .. } if scheme == "s3a"
        ));
        let err = SourceUri::parse("s3:///p").unwrap_err();
        assert!(err.to_string().contains("no bucket"), "{err}");
    }

    #[test]
    fn hdfs_and_bad_forms() {
        let hdfs = SourceUri::parse("hdfs://nn:8020/user/sequins/").unwrap();
        assert_eq!(hdfs.display_base(), "hdfs://nn:8020/user/sequins");
        assert!(SourceUri::parse("hdfs:///x").is_err());
        let err = SourceUri::parse("gs://bucket").unwrap_err();
        assert!(err.to_string().contains("unsupported scheme"), "{err}");
        assert!(SourceUri::parse("").is_err());
    }
}
