"""Floor 4, tools over any built model: int8 / bf16 / compiled paths (:mod:`~kexue.tools.quantize`), ONNX
export and an ONNX Runtime backend (:mod:`~kexue.tools.onnx_export`), intermediate capture (:mod:`~kexue.tools.capture`) and image-sample metrics
(:mod:`~kexue.tools.image_metrics`)."""
