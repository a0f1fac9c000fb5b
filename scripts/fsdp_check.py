"""What torch's FSDP (``fully_shard``) does with the two things a continual method does at a
task boundary, on two CPU processes (gloo):

    torchrun --nproc_per_node 2 scripts/fsdp_check.py

1. a whole-tensor update of a sharded weight, as a merge ``W += B A`` makes;
2. a parameter added after sharding, as the next task's adapter or new units would be, trained
   one step on each process's own batch: are the two processes' copies still equal?

Each process prints what it saw; nothing is saved (docs/using.md, "Several processes").
"""

import torch
import torch.distributed as dist
from torch.distributed.fsdp import fully_shard


def main() -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    fully_shard(model[0])
    fully_shard(model)
    try:
        with torch.no_grad():
            model[0].weight += torch.ones(16, 8)
        print(f"process {rank}: a whole-tensor update of a sharded weight: accepted")
    except RuntimeError as e:
        print(f"process {rank}: a whole-tensor update of a sharded weight: refused ({e})"[:160])
    last = model[2]
    last.scale = torch.nn.Parameter(torch.ones(4))  # added after sharding
    forward = last.forward
    last.forward = lambda x: forward(x) * last.scale
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    torch.manual_seed(1 + rank)  # each process its own batch, as data parallelism gives
    model(torch.randn(4, 8)).sum().backward()
    opt.step()
    mine = last.scale.detach().clone()
    both = [torch.zeros_like(mine) for _ in range(2)]
    dist.all_gather(both, mine)
    same = "equal" if torch.equal(*both) else "different"
    print(f"process {rank}: the parameter added after sharding is a {type(last.scale).__name__}; "
          f"after one step the processes' copies are {same} ({both[0][0]:.3f} and "
          f"{both[1][0]:.3f} in the first entry)")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
