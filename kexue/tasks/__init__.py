"""Task recipes (NER, classification, reading comprehension, conditional poems, dialogue) and their shared
plumbing; each recipe module has ``main(argv)`` behind a ``kexue <name>`` command and a ``recipes/`` script,
reads the user's data (:mod:`.data`), saves a model folder (:mod:`.export`) and defines the
:class:`kexue.predict.Predictor` that ``kexue.load`` returns for it."""
