"""The family on `torch.distributed`: sharded (DTensor) parameters, checks across ranks,
and the collectives of fused tables under data parallelism.

- **DTensor parameters** (FSDP2's `fully_shard`, tensor parallelism): `local_shards`
  runs a step on each rank's local shard, so the numba kernels see plain tensors and
  nothing is gathered to full size. State is created on the shard and kept as a DTensor
  with the parameter's placements (row-wise state, one value per row, shards with its
  rows), which is what `torch.distributed.checkpoint` saves and reshards. This is exact
  for every member whose state is elementwise or per row; `AdagradNorm` (one norm over
  the whole parameter) and `FullMatrixAdagrad` (blocks across rows) are refused.
- **Ranks agree**: at an optimizer's first step, when a default process group of more
  than one rank exists, every rank's hyperparameters are compared with rank 0's
  (`check_ranks_agree`); a difference raises on every rank, so none is left waiting.
- **DCP before the first step**: `torch.distributed.checkpoint.state_dict.get_state_dict`
  initialises an optimizer whose state is empty by a step with lr 0 on zero gradients.
  Ours creates the fresh state then and changes nothing else (`is_state_initialising_step`),
  so a checkpoint taken before the first step is the true state and resuming from it
  never changes the run (torch's own Adagrad creates its state in its constructor).
- **Checkpoints**: `save_checkpoint` / `load_checkpoint` are DCP's save and load with
  `get_state_dict` / `set_state_dict`, plus one thing DCP cannot do alone: state that
  appears only once it is needed (lazy decay clocks, catch-up tables) is absent from a
  fresh optimizer, so DCP, which loads the keys of the state it is given, would drop it;
  `load_checkpoint` creates it first from the checkpoint's metadata, placed as the
  parameter (any world size: DCP reshards), so that resuming never changes the run.
- **Fused tables** (`adagrad.nn`, ``update_in_backward(optimizer, process_group=...)``):
  `gather_rows` all-gathers every rank's ids and output gradients and averages them over
  the ranks, as `DistributedDataParallel` averages gradients, so that every replica
  applies the same global update to the union of the touched rows, once.
"""

from __future__ import annotations

from adagrad.distributed.data_parallel import ignore_fused_tables
from adagrad.nn.collectives import average_dense, check_fused_table, gather_ids, gather_rows
from adagrad.distributed.dcp import load_checkpoint, save_checkpoint
from adagrad.optim.ranks import check_ranks_agree, is_state_initialising_step
from adagrad.optim.sharding import is_dtensor, local_shards

__all__ = ["average_dense", "check_fused_table", "check_ranks_agree", "gather_ids",
           "gather_rows", "ignore_fused_tables", "is_dtensor", "is_state_initialising_step",
           "load_checkpoint", "local_shards", "save_checkpoint"]
