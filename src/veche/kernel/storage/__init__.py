"""Storage: blobs and images. `BlobStore` keeps named bytes in files under the data
directory or in an S3-compatible bucket (`VECHE_BLOB_URL`), reached as `kernel.blobs`;
`ImagePipeline` checks uploaded images by their bytes (type, pixel cap, polyglots) and
re-encodes them as metadata-free WebP variants off the event loop; `receive_file` reads
one multipart upload within a byte limit."""

from veche.kernel.storage.blobs import (
    BlobConfigError,
    BlobError,
    BlobNotFound,
    BlobStore,
    InvalidBlobKey,
    LocalBlobStore,
    S3BlobStore,
    StoredBlob,
    blob_store_from_settings,
    check_key,
    etag_of,
)
from veche.kernel.storage.errors import (
    ImageCorrupt,
    ImagePolyglot,
    ImageTooManyPixels,
    UnsupportedImageType,
    UploadMalformed,
    UploadMissing,
    UploadNotMultipart,
    UploadTooLarge,
)
from veche.kernel.storage.images import (
    ACCEPTED_TYPES,
    WEBP,
    ImageOutput,
    ImagePipeline,
    ProcessedImage,
    Variant,
    check_not_polyglot,
    detect_type,
    process_image,
)
from veche.kernel.storage.uploads import UPLOAD_BODY_CEILING, Upload, receive_file

__all__ = [
    "ACCEPTED_TYPES",
    "UPLOAD_BODY_CEILING",
    "WEBP",
    "BlobConfigError",
    "BlobError",
    "BlobNotFound",
    "BlobStore",
    "ImageCorrupt",
    "ImageOutput",
    "ImagePipeline",
    "ImagePolyglot",
    "ImageTooManyPixels",
    "InvalidBlobKey",
    "LocalBlobStore",
    "ProcessedImage",
    "S3BlobStore",
    "StoredBlob",
    "UnsupportedImageType",
    "Upload",
    "UploadMalformed",
    "UploadMissing",
    "UploadNotMultipart",
    "UploadTooLarge",
    "Variant",
    "blob_store_from_settings",
    "check_key",
    "check_not_polyglot",
    "detect_type",
    "etag_of",
    "process_image",
    "receive_file",
]
