"""Distributed training on CPU (gloo) or GPUs (nccl): start the process group, wait for every rank,
check that the replicas agree."""
import datetime
import hashlib
import os
import subprocess

import torch
import torch.distributed as dist


def init_dist(launcher, opt):
    """Start torch.distributed. basicsr's init_dist hard-codes nccl and divides by the GPU count;
    here the backend follows the device (nccl on CUDA, gloo on CPU) unless dist_params.backend says."""
    params = dict(opt.get('dist_params') or {})
    use_cuda = torch.cuda.is_available() and opt.get('num_gpu', 'auto') != 0
    backend = params.pop('backend', None) or ('nccl' if use_cuda else 'gloo')
    if launcher == 'slurm':
        proc_id, ntasks = int(os.environ['SLURM_PROCID']), int(os.environ['SLURM_NTASKS'])
        os.environ.setdefault('MASTER_PORT', str(params.pop('port', 29500)))
        os.environ['MASTER_ADDR'] = subprocess.getoutput(
            f'scontrol show hostname {os.environ["SLURM_NODELIST"]} | head -n1')
        os.environ['WORLD_SIZE'], os.environ['RANK'] = str(ntasks), str(proc_id)
        ngpu = torch.cuda.device_count()
        os.environ['LOCAL_RANK'] = str(proc_id % ngpu if ngpu else int(os.environ.get('SLURM_LOCALID', 0)))
    params.pop('port', None)
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get('LOCAL_RANK', 0)) % torch.cuda.device_count())
    timeout = params.pop('timeout', None)
    kwargs = {'timeout': datetime.timedelta(seconds=timeout)} if timeout else {}
    dist.init_process_group(backend=backend, **kwargs)
    if dist.get_rank() == 0:
        print(f'distributed: backend {backend}, world size {dist.get_world_size()}', flush=True)
    return dist.get_rank(), dist.get_world_size()


def check_replicas(model, label):
    """After a DDP stage, check that every rank holds bit-identical generator weights (a rank that
    drifted would mean the run is not what rank 0 saved); rank 0 logs the result, a mismatch raises."""
    net = model.get_bare_model(model.net_g)
    h = hashlib.sha256()
    for k, v in net.state_dict().items():
        if '.weight_fake_quant.' in k:  # an int8 stage's weight ranges follow from the weights, at each forward:
            continue  # rank 0 alone validated after the last step, so its ranges are one step newer than the others'
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    digests = [None] * dist.get_world_size()
    dist.all_gather_object(digests, h.hexdigest())
    if len(set(digests)) != 1:
        raise RuntimeError(f'[{label}] DDP replicas differ after the stage: {digests}')
    if dist.get_rank() == 0:
        print(f'[{label}] DDP replicas identical on {len(digests)} ranks (sha256 {digests[0][:16]})', flush=True)


def barrier():
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
