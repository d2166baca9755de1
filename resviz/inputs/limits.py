"""Every limit on what a student can hand the server, in one place.

Upload caps are in megabytes: each uploader passes its own to ``st.file_uploader(max_upload_size=...)`` (checked
by the browser only), ``.streamlit/config.toml``'s ``server.maxUploadSize`` is the largest of them, and the
library function that reads an upload checks its size again on the server. The model budget's defaults are here
too; a teacher overrides them with environment variables (``resviz.inputs.budget.session_budget``).
"""

IMAGE_MB = 10  # a phone photo is 2-8 MB
ZIP_MB = 50  # a teacher's small ImageFolder of images
WEIGHTS_MB = 300  # the largest state dict the app builds: Wide ResNet-50-2, 68.9M float32 values ~ 263 MB
SERVER_MB = max(IMAGE_MB, ZIP_MB, WEIGHTS_MB)

# Images (resviz.inputs.images: the one decoder, used for uploads, zips and teacher folders)
MAX_PIXELS = 40_000_000  # 40 megapixels: above any phone camera, far below a bomb's billions
MAX_ASPECT = 10  # long side at most 10x the short side (a phone panorama is about 4:1); more is refused
FOLDER_PIXELS = 2_000_000_000  # pixels decoded for one image folder in all (20,000 images of 316x316)
FOLDER_FILES = 20_000  # files in one image folder or zip; more is almost surely a mistake or a zip bomb
FOLDER_MB = 300  # bytes one image folder unpacks to in all, in MiB (a zip's entries, a teacher folder's files)

# Checkpoints (resviz.inputs.weights), checked from the zip directory before torch.load reads anything
CHECKPOINT_ENTRIES = 5_000  # ResNet-152's state dict has 938 entries; 100,000 tiny tensors took 28-46 s to load
CHECKPOINT_RATIO = 10  # uncompressed / compressed: torch.save stores entries uncompressed (ratio 1)
CHECKPOINT_PICKLE_MB = 4  # the pickle naming the tensors: ResNet-152's is 98 kB

# Model budget per student request (resviz.inputs.budget); environment variables override these
# Every preset fits at every page's largest batch (the most: ResNet-152 in Signal flow, batch 8, with its plain
# twin: 3.7 GiB estimated, 553 G multiply-adds a step); width 512 at input 1024 needs 60 GiB for one image.
BUDGET_MB = 4096  # weights, gradients and activations of one request (env RESVIZ_BUDGET_MB)
BUDGET_GMACS = 1000  # multiply-adds of one step (forward + backward, every net), billions (env RESVIZ_BUDGET_GMACS)
BUDGET_BLOCKS = 1000  # residual blocks in one model; ResNet-1202, the paper's deepest, has 600 (env RESVIZ_BUDGET_BLOCKS)


def mb(n_mb: int) -> int:
    """Megabytes as bytes (Streamlit counts 1 MB as 1024 * 1024 bytes)."""
    return n_mb * 1024 * 1024
