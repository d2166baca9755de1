"""Upload limits, in megabytes. Each uploader passes its own to ``st.file_uploader(max_upload_size=...)``;
``.streamlit/config.toml``'s ``server.maxUploadSize`` is the largest of them, so nothing bigger gets in."""

IMAGE_MB = 10  # a phone photo is 2-8 MB
ZIP_MB = 50  # a teacher's small ImageFolder of images
WEIGHTS_MB = 300  # the largest state dict the app builds: Wide ResNet-50-2, 68.9M float32 values ~ 263 MB
SERVER_MB = max(IMAGE_MB, ZIP_MB, WEIGHTS_MB)


def mb(n_mb: int) -> int:
    """Megabytes as bytes (Streamlit counts 1 MB as 1024 * 1024 bytes)."""
    return n_mb * 1024 * 1024
