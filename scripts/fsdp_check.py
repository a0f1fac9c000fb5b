"""What torch's FSDP (``fully_shard``) does with the two things a continual method does at a
task boundary, on two CPU processes (gloo):

    torchrun --nproc_per_node 2 scripts/fsdp_check.py

1. an in-place update of a sharded weight with a plain tensor, as a merge ``W += B A`` written
   for whole weights makes;
2. a parameter added after sharding, as the next task's adapter or new units would be: one SGD
   step, each process on its own batch, against the same step taken in one process on both
   batches (the mean of their losses), for a weight FSDP shards (the control) and for the
   added parameter.

Each process prints what it saw; nothing is saved (docs/using.md, "Several processes").
"""

import torch
import torch.distributed as dist
from torch.distributed.fsdp import fully_shard


def build() -> torch.nn.Sequential:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))


def add_scale(model: torch.nn.Sequential) -> torch.nn.Parameter:
    last = model[2]
    last.scale = torch.nn.Parameter(torch.ones(4))
    forward = last.forward
    last.forward = lambda x: forward(x) * last.scale
    return last.scale


def main() -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    merged = build()
    fully_shard(merged)
    try:
        with torch.no_grad():
            merged[0].weight += torch.ones(16, 8)
        print(f"process {rank}: an in-place update of a sharded weight with a plain tensor: "
              "accepted")
    except RuntimeError as e:
        print(f"process {rank}: an in-place update of a sharded weight with a plain tensor: "
              f"refused ({str(e)[:70]})")

    model, reference = build(), build()
    fully_shard(model[0])
    fully_shard(model)
    scale, reference_scale = add_scale(model), add_scale(reference)  # added after sharding
    batches = [torch.randn(4, 8, generator=torch.Generator().manual_seed(1 + r)) for r in (0, 1)]
    model(batches[rank]).sum().backward()
    torch.optim.SGD(model.parameters(), lr=1.0).step()
    sum(reference(b).sum() for b in batches).div(2).backward()
    torch.optim.SGD(reference.parameters(), lr=1.0).step()
    sharded = torch.allclose(model[0].weight.full_tensor(), reference[0].weight, atol=1e-6)
    added = torch.allclose(scale.detach(), reference_scale.detach(), atol=1e-6)
    print(f"process {rank}: after one step against one process on both batches: the weight "
          f"FSDP shards {'equal' if sharded else 'different'}; the parameter added after "
          f"sharding ({type(scale).__name__}) {'equal' if added else 'different'} "
          f"({scale[0]:.3f} against {reference_scale[0]:.3f} in its first entry)")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
