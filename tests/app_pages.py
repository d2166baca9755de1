"""Every page of the app (URL path -> a text it must show); the browser test visits each one."""
PAGE_TEXTS = {
    "": "What each page teaches",
    "architecture": "Layer table",
    "shortcut_lab": "Shortcut lab",
    "feature_maps": "Feature maps",
}
