"""Multi-process helpers of the training engine: the differentiable all-gather that makes in-batch losses
(CoSENT, SimBERT's, SimCSE / InfoNCE with ``gather=True``) see the global batch, so that N processes
compute exactly the loss and gradients of one process holding the global batch.

The gather itself lives with the tensor operations (:mod:`kexue.layers.distributed`) so that the losses,
a floor below the engine, can use it; it is re-exported here next to :func:`kexue.train.fit`'s
process-group setup (:func:`kexue.train.init_distributed`).
"""
from kexue.layers.distributed import all_gather, all_gather_with_grad, rank, world_size

__all__ = ["all_gather", "all_gather_with_grad", "rank", "world_size"]
