//! Why a request failed, one enum per S3 error code that has several
//! causes. Each `Display` is the `<Message>` the workload gets, in S3's
//! words where S3 has them; the table in `super` maps the code.

use http::StatusCode;

use crate::body::BoxError;
use crate::error_chain::error_chain;
use crate::format::FormatError;

/// `400 InvalidArgument`.
#[derive(Debug, thiserror::Error)]
pub enum ArgumentError {
    #[error("list-type must be 2.")]
    ListType,
    #[error("x-id={hint} does not name this request's operation ({operation}).")]
    RoutingHint { hint: String, operation: &'static str },
    #[error("Object keys may not contain NUL characters.")]
    NulInKey,
    #[error("Object keys with `.` or `..` path segments are not accepted by the encryption proxy.")]
    DotSegment,
    #[error("The query parameter {name} is not a valid header.")]
    QueryNotHeader { name: String },
    #[error("{name} is given both as a header and as a query parameter, with different values.")]
    HeaderAndQueryDiffer { name: String },
    #[error("The query parameter {name} is given more than once.")]
    DuplicateQuery { name: String },
    #[error("The request URI is not valid.")]
    Uri,
    #[error("The request URI has a malformed percent-encoding.")]
    PercentEncoding,
    #[error("The request URI is not valid UTF-8 after percent-decoding.")]
    NotUtf8,
    #[error("The request cannot be mapped upstream: {0}")]
    Unmappable(http::uri::InvalidUri),
    #[error("A request header value is not visible ASCII.")]
    HeaderNotAscii,
    #[error("Copy Source must mention the source bucket and key: sourcebucket/sourcekey.")]
    CopySource,
    #[error(
        "The x-amz-copy-source-range value must be of the form bytes=first-last where first and last are the zero-based offsets of the first and last bytes to copy"
    )]
    CopySourceRange,
    #[error(
        "Requests specifying Server Side Encryption with Customer provided keys must provide the algorithm, the key and its MD5."
    )]
    SseC,
    #[error("Part number must be an integer between 1 and 10000, inclusive")]
    PartNumber,
    #[error("PartNumber is not a number")]
    CompletePartNumber,
    #[error("{header} is not a number")]
    NotANumber { header: &'static str },
    #[error("The x-amz-object-attributes header specifying the attributes to be retrieved is either missing or empty")]
    NoAttributes,
    #[error("Invalid attribute name specified: {name}")]
    AttributeName { name: String },
    #[error("{header} must be a non-negative integer.")]
    NotNonNegative { header: &'static str },
    /// The object is larger than the format can hold.
    #[error(transparent)]
    TooLarge(FormatError),
}

/// `400 InvalidRequest`.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// `Connection` named an end-to-end field of the request (`end_hop`).
    #[error("The Connection header may name only hop-by-hop fields; it names a field of the request itself.")]
    ConnectionHeader,
    /// A single-valued field sent more than once (`refuse_repeated`).
    #[error("The header {name} may be sent only once.")]
    RepeatedHeader { name: String },
    #[error("Unknown metadata directive.")]
    MetadataDirective,
    #[error("Unknown tagging directive.")]
    TaggingDirective,
    #[error("The trailer {name} is not supported.")]
    UnsupportedTrailer { name: String },
    #[error("Expecting a single x-amz-checksum- header. Multiple checksum Types are not allowed.")]
    MultipleChecksums,
    #[error("The {header} trailer declared in x-amz-trailer is missing.")]
    MissingTrailer { header: &'static str },
    #[error("Value for {header} header is invalid.")]
    ChecksumValue { header: &'static str },
    #[error("Cannot specify both Range header and partNumber query parameter")]
    RangeAndPartNumber,
    /// A checksum of a whole multipart object the proxy cannot compute from
    /// what it knows of the parts; accepted unchecked, it would be a lie.
    #[error(
        "The encryption proxy cannot verify this {algorithm} checksum of the whole object: it verifies FULL_OBJECT CRC32, CRC32C and CRC64NVME checksums, and COMPOSITE ones, of parts uploaded through this proxy process. Complete the upload without it; nothing was completed."
    )]
    UnverifiableChecksum { algorithm: &'static str },
}

/// `501 NotImplemented`: nothing was forwarded.
#[derive(Debug, thiserror::Error)]
pub enum Unsupported {
    #[error("browser-form POST uploads are not encrypted by the proxy; nothing was forwarded.")]
    FormPost,
    #[error("The {header} header (appending to an object) is not supported through the encryption proxy.")]
    Append { header: &'static str },
    #[error("The encryption proxy does not support {method} on {target} with {params}; nothing was forwarded.")]
    Shape { method: http::Method, target: &'static str, params: QueryNames },
    /// An operation the allow-list recognises and refuses, with its reason.
    #[error("{0}.")]
    Operation(&'static str),
}

/// The query parameter names of an unsupported request, for its message.
#[derive(Debug)]
pub struct QueryNames(pub Vec<String>);

impl std::fmt::Display for QueryNames {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            f.write_str("no query parameters")
        } else {
            write!(f, "the query parameters {}", self.0.join(", "))
        }
    }
}

/// `400 BadDigest`: a checksum the client sent does not match the body.
#[derive(Debug, thiserror::Error)]
pub enum DigestMismatch {
    #[error("The Content-MD5 you specified did not match what we received.")]
    ContentMd5,
    #[error("The {algorithm} you specified did not match the calculated checksum.")]
    Checksum { algorithm: &'static str },
}

/// `400 IncompleteBody`: the request body ended early or is malformed.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("The request body could not be read: {0}")]
    Read(BoxError),
    #[error(
        "You did not provide the number of bytes specified by the Content-Length HTTP header (declared {declared}, got {actual})."
    )]
    LengthMismatch { declared: u64, actual: u64 },
    #[error("The aws-chunked request body is malformed: {0}.")]
    MalformedChunk(&'static str),
    #[error("The request body ended before the final aws-chunked chunk.")]
    EndedEarly,
}

/// `400 MalformedTrailerError`: the aws-chunked trailers are malformed,
/// too many or too large, or were not announced in `x-amz-trailer`.
#[derive(Debug, thiserror::Error)]
pub enum TrailerError {
    #[error("The request contained trailing data that was not well-formed (a trailer has no colon).")]
    NoColon,
    #[error("The request contained more trailing data than is accepted (at most 8 trailers, 8 KiB).")]
    TooLarge,
    #[error("The request contained the trailer {name}, which x-amz-trailer did not declare.")]
    Undeclared { name: String },
    #[error("The request contained the trailer {name} more than once.")]
    Repeated { name: String },
}

/// `403 AccessDenied` for a presigned URL outside its validity window.
#[derive(Debug, thiserror::Error)]
pub enum PresignError {
    #[error("Request has expired")]
    Expired,
    #[error("X-Amz-Expires must be more than 0 and less than 604800 seconds")]
    ExpiresOutOfRange,
}

/// `403 AccessDenied` from `CLOUDTASER_S3PROXY_ALLOWED_OPERATIONS` or `_BUCKETS`.
#[derive(Debug, thiserror::Error)]
pub enum PolicyDenial {
    #[error("{operation} is not allowed through this proxy ({setting}).")]
    Operation { operation: &'static str, setting: &'static str },
    #[error("{operation} on {resource} is outside {setting}.")]
    Outside { operation: &'static str, resource: String, setting: &'static str },
    #[error("The copy source {resource} is outside {setting}.")]
    CopySource { resource: String, setting: &'static str },
    #[error("{operation} with these headers is also {implied}, which is not allowed through this proxy ({setting}).")]
    Implied { operation: &'static str, implied: &'static str, setting: &'static str },
    #[error("Deleting /{bucket}/{key} is outside {setting}.")]
    DeleteKey { bucket: String, key: String, setting: &'static str },
}

/// `400 MalformedXML`: a request document the proxy reads strictly
/// (`s3::delete`) is not one S3's schema allows. The messages never quote
/// the document: its text may be object keys.
#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    #[error("the document is not UTF-8")]
    NotUtf8,
    #[error("the XML declaration is not version 1.0 with UTF-8 encoding")]
    Declaration,
    #[error("document type declarations are not accepted")]
    Doctype,
    #[error("processing instructions are not accepted")]
    ProcessingInstruction,
    #[error("the document contains a character XML 1.0 does not allow")]
    Character,
    #[error("the document is not well-formed")]
    Syntax,
    #[error("the document has an element this request does not define, or in a namespace other than S3's")]
    Element,
    #[error("only namespace declarations are accepted as attributes")]
    Attribute,
    #[error("text outside the elements that carry values")]
    Text,
    #[error("more than one {element} where one is allowed")]
    Duplicate { element: &'static str },
    #[error("an Object has no Key")]
    MissingKey,
    #[error("an Object has an empty Key")]
    EmptyKey,
    #[error("{element} does not hold a valid value")]
    Value { element: &'static str },
    #[error("the document names no Object")]
    NoObjects,
    #[error("the document names more than {max} Objects")]
    TooManyObjects { max: usize },
}

/// `400 InvalidPart`.
#[derive(Debug, thiserror::Error)]
#[error(
    "One or more of the specified parts could not be found. The part may not have been uploaded, or the specified entity tag may not match the part's entity tag (part {part})."
)]
pub struct MissingPart {
    pub part: u32,
}

/// `504 GatewayTimeout` when it is the error of an upstream call
/// (`UpstreamFailure::Unreachable`): the upstream accepted no connection,
/// or sent no response head, in the configured time
/// (`CLOUDTASER_S3PROXY_UPSTREAM_CONNECT_TIMEOUT_SECS`, `_RESPONSE_TIMEOUT_SECS`).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UpstreamTimeout {
    #[error("no connection to the upstream within {} s", .0.as_secs())]
    Connect(std::time::Duration),
    #[error("no response from the upstream within {} s", .0.as_secs())]
    ResponseHead(std::time::Duration),
}

/// `502 BadGateway`: the upstream could not be reached or answered out of turn.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamFailure {
    #[error("{}", error_chain(&**.0))]
    Unreachable(BoxError),
    /// A response body that could not be read, or was over the limit.
    #[error(transparent)]
    Body(crate::body::CollectError),
    /// An answer the proxy cannot go on from; `code` is the S3 error code, if any.
    #[error("{step} answered {status}{}", with_code(code))]
    Answered { step: &'static str, status: StatusCode, code: String },
    #[error("The upload's parts could not be listed ({status}{}).", with_code(code))]
    ListParts { status: StatusCode, code: String },
    #[error("sealing the multipart object: {step} answered {status}{}", with_code(code))]
    Seal { step: &'static str, status: StatusCode, code: String },
    #[error("ListParts answered an incomplete part list.")]
    IncompletePartList,
    /// An answer no row of `request::answers`' table takes for this step
    /// (a `206` to a whole-object GET, a `203`, a `201`): never relayed.
    #[error("{step} was answered {status}, which the proxy did not ask for; nothing was passed on.")]
    Unexpected { step: &'static str, status: StatusCode, object_bytes: bool },
    /// A ranged read answered with bytes other than those asked for.
    #[error("{step} was answered with another range than the one asked for; nothing was passed on.")]
    WrongRange { step: &'static str },
}

fn with_code(code: &str) -> String {
    if code.is_empty() { String::new() } else { format!(" {code}") }
}

/// `500 InternalError`: a fault of the proxy or an upstream answer it cannot use.
#[derive(Debug, thiserror::Error)]
pub enum InternalError {
    #[error("header value: {0}")]
    HeaderValue(#[from] http::header::InvalidHeaderValue),
    #[error("loading TLS roots: {0}")]
    TlsRoots(std::io::Error),
    #[error("signing parameters: {0}")]
    SigningParams(BoxError),
    #[error("signing failed: {0}")]
    Signing(BoxError),
    /// An XML document the proxy reads from the upstream or writes.
    #[error("{context}: {source}")]
    Xml { context: &'static str, source: BoxError },
    #[error("the copy source has no length")]
    CopySourceLength,
    /// An envelope the proxy built could not take its MAC (a layout
    /// without its table): a bug, never a client's doing.
    #[error("the envelope could not be authenticated")]
    Envelope,
    #[error(transparent)]
    Format(FormatError),
}
