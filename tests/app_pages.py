"""Every page of the app (URL path -> a text it must show); the browser test visits each one."""
PAGE_TEXTS = {
    "": "What each page teaches",
    "architecture": "Layer table",
    "shortcut_lab": "Shortcut lab",
    "signal_flow": "Signal flow",
    "training": "Training race",
    "feature_maps": "Feature maps",
    "lesion": "Lesion study",
    "paths": "Paths",
    "shattered": "Shattered gradients",
    "landscape": "Loss landscape",
}
