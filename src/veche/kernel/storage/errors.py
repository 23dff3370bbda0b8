"""The storage package's expected failures: problem responses with stable codes."""

from __future__ import annotations

from veche.kernel.errors import ProblemError


class UploadNotMultipart(ProblemError):
    status = 415
    code = "storage.upload_not_multipart"
    title = "Send the file as multipart/form-data"


class UploadMalformed(ProblemError):
    status = 400
    code = "storage.upload_malformed"
    title = "The multipart body could not be read"


class UploadMissing(ProblemError):
    status = 422
    code = "storage.upload_missing"
    title = "The request carries no file"


class UploadTooLarge(ProblemError):
    status = 413
    code = "storage.upload_too_large"
    title = "The file is too large"


class UnsupportedImageType(ProblemError):
    status = 415
    code = "storage.unsupported_image_type"
    title = "Only JPEG, PNG, WebP and GIF images are accepted"


class ImagePolyglot(ProblemError):
    """The bytes are an image and something else too (markup, an appended archive)."""

    status = 415
    code = "storage.image_polyglot"
    title = "The file carries content besides the image"


class ImageTooManyPixels(ProblemError):
    status = 422
    code = "storage.image_too_many_pixels"
    title = "The image has too many pixels"


class ImageCorrupt(ProblemError):
    status = 422
    code = "storage.image_corrupt"
    title = "The image could not be decoded"
