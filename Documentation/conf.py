# SPDX-License-Identifier: GPL-2.0
# Sphinx configuration for tballoon's documentation (scripts/check docs lane:
# sphinx-build -W, so any warning fails the run).
project = 'tballoon'
copyright = 'tballoon authors'
master_doc = 'index'
exclude_patterns = ['_build']
html_theme = 'alabaster'
highlight_language = 'none'
