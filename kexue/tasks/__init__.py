"""Task recipes (NER, classification, reading comprehension, conditional poems, dialogue) and their shared
plumbing; each recipe module has ``main(argv)`` behind a ``kexue <name>`` command and a ``recipes/`` script."""
