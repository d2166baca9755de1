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
FOLDER_SCAN_PIXELS = 20_000_000_000  # a folder's JPEGs' pixels x scans in all, checked before each is decoded: each
# scan passes over every pixel even at a draft scale (0.55 CPU-s a billion, measured: this is about 11 s). 50 MB of
# real photos stay far below: 25 progressive 12 MP ones (10 scans) make 3 billion, 20,000 of 64x64 pixels 0.8 billion
# A zip's directory, counted and checked before any work that grows with it: zipfile parsed 500,000 empty entries
# (41 MB) in 12 s and 450 MB, and the set of every path's parents grew with depth squared (3.9 GB, 103 s for 512 kB)
ZIP_ENTRIES = 50_000  # FOLDER_FILES images, a macOS __MACOSX twin of each, and their folders; parsed in about 0.7 s
PATH_DEPTH = 16  # folders and file in one entry's path: an ImageFolder needs 2 (cats/1.jpg), wrapping folders a few
PATH_BYTES = 1_024  # one entry's whole path (UTF-8); each part is at most 255 bytes, as in every file system
JPEG_SCANS = 64  # scans (SOS markers) in one JPEG: each scan goes over every pixel again (about 22 ms per scan
# at 36 MP, measured), so 64 bound a 40 MP file to about 1.5 CPU-s. Real encoders write far fewer: libjpeg's
# progressive script has 10 for a colour photo (6 for grey), mozjpeg's tuned ones about 20, Photoshop's 3 to 5

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

# What any model config may ask for (resviz.models.check_config), checked in microseconds before anything is traced,
# built or even hashed: each bounds a number whose size the trace and the budget's arithmetic grow with. A 26-stage
# net of base width 16 asks for 2^29-channel convolutions, whose size overflows torch's 64-bit storage count.
CONFIG_STAGES = 8  # the paper's nets have 3 (CIFAR) or 4 (ImageNet); each later stage halves the picture
CONFIG_CHANNELS = 65_536  # channels of any layer: 32x the widest in torchvision (2,048), the sidebar's 512 x 2^7
CONFIG_INPUT = 4_096  # input side in pixels (ImageNet's nets use 224, the sidebar offers up to 1,024)
CONFIG_CLASSES = 100_000  # outputs of the classifier (ImageNet-21k has 21,841 classes)


def mb(n_mb: int) -> int:
    """Megabytes as bytes (Streamlit counts 1 MB as 1024 * 1024 bytes)."""
    return n_mb * 1024 * 1024


# What one browser session may send (resviz.ui: the sidebar's text, and the server's door for every session)
LAYERS_CHARS = 60  # the sidebar's "Blocks per stage" text: CONFIG_STAGES stages of 9,999 blocks fit in 48 characters
LAYERS_BLOCKS = 9_999  # blocks in one stage (four digits); the model budget refuses big nets with their numbers
WIDGET_TEXT_CHARS = 1_000  # characters of one text a browser sends for a widget; longer is cut before any page reads it
SESSION_UPLOAD_MB = WEIGHTS_MB + ZIP_MB + IMAGE_MB  # uploads one session holds at once (env RESVIZ_SESSION_UPLOAD_MB)
SESSION_UPLOAD_FILES = 6  # uploaded files one session holds at once; every uploader holds one
UPLOAD_GRACE_S = 30  # an upload its session's widgets do not name is freed this long after it arrived
