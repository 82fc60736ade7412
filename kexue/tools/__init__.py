"""Floor 4, tools over any built model: int8 / compiled paths (:mod:`~kexue.tools.quantize`),
intermediate capture (:mod:`~kexue.tools.capture`) and image-sample metrics
(:mod:`~kexue.tools.image_metrics`)."""
