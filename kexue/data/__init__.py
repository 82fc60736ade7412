"""Floor 1, data: readers of every file format kexue takes (:mod:`~kexue.data.files` for line formats,
:mod:`~kexue.data.pairs` for sentence pairs, :mod:`~kexue.data.triplets` for contrastive triplets and
sentence files, :mod:`~kexue.data.images` for digits and image folders), the
shipped data sets under ``../shared/data`` (:mod:`~kexue.data.shipped`, read by those same strict readers;
the folder is located by :mod:`~kexue.data.paths`) and input checks (:mod:`~kexue.data.inputs`). Imports
nothing above :mod:`kexue.io`."""
