"""WarmStartModel: BasicSR's SRModel plus the contrastive loss, crash-safe saving and non-finite guards.

Overrides only what SRModel cannot do:

* ``init_training_settings``: also builds ``train.contrastive_opt`` (SRModel would silently ignore it)
  and, for a fresh stage (``path.save_init``, set by the stage runner), saves the weights the stage
  starts from as ``models/net_g_init.pth``.
* ``optimize_parameters``: feeds the contrastive loss ``lq``; logs ``l_pix``, ``l_contrast``,
  ``l_total``; skips the update on a non-finite loss or gradient and stops after
  ``train.max_nonfinite`` in a row (default 10).
* ``save_network`` / ``save_training_state``: atomic writes (temporary file + rename), clear errors
  instead of basicsr's "Just ignore it", never a checkpoint with non-finite weights; the training
  state also holds the torch / numpy / Python RNG states and the training sampler's position in the
  epoch (``sampler``, see :mod:`rlfn_arch.data.sampler`; read back by the sampler itself).
* ``resume_training``: restores those RNG states too.
* ``get_current_log`` / ``nondist_validation``: each logged training loss and validation
  result is also appended to ``curves.jsonl`` in the stage folder (rank 0; read by
  :mod:`rlfn_arch.training.curves` for the run's plot).
* ``load_network``: ``weights_only=True`` loading of torch and safetensors files (by content), CUDA-saved files
  open on CPU, non-finite weights refused with the tensor's name; an RLFN takes the official files as
  released (key layouts, [0, 255] range: :func:`rlfn_arch.archs.rlfn_weights.adopt_weights`), and
  ``path.cross_scale_g`` warm-starts from another scale.
* ``model_to_device``: ``train: qat`` puts the network under int8 fake quantization first
  (:mod:`rlfn_arch.archs.qat`; a resumed stage loads its observed ranges too; with ``qat: target: float``,
  the default, the training target is the float network's output for the patch, not the HR patch);
  DistributedDataParallel without CUDA ``device_ids`` on CPU (gloo); the network in channels_last layout where
  ``train: channels_last`` (default ``auto`` in training; testing keeps NCHW) says so.
* ``feed_data`` / ``test``: inputs in the network's layout; validation in ``val: precision`` (default
  fp32, the paper protocol; ``train`` = the training precision), outputs returned as fp32.

Mixed precision (``train: precision: auto | fp32 | bf16 | fp16``, default ``auto``; see
:mod:`rlfn_arch.utils.precision`): the forward pass and the losses run under autocast, weights, optimizer
state, EMA and checkpoints stay fp32. fp16 uses dynamic loss scaling (``torch.amp.GradScaler``, its state
saved in training states); a step the scaler skips because the scaled gradients overflowed is scaling at
work and does not count toward ``max_nonfinite``; a non-finite fp32 loss does.
"""
import json
import os
import random
from collections import Counter, OrderedDict
from copy import deepcopy

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from rlfn_arch.archs.qat import int8_state_problem, prepare_qat
from rlfn_arch.archs.rlfn_arch import RLFN
from rlfn_arch.archs.rlfn_weights import adopt_weights, cross_scale_state
from rlfn_arch.utils.checkpoint import (
    QUANT_KEY_RE,
    CheckpointError,
    atomic_save,
    check_finite,
    safe_load,
    select_weights,
    split_quant_state,
    strip_module,
)
from rlfn_arch.utils.options.schema import qat_settings
from rlfn_arch.utils.precision import autocast, describe, resolve_channels_last, resolve_precision

from basicsr.archs import build_network
from basicsr.losses import build_loss
from basicsr.models.sr_model import SRModel
from basicsr.utils import get_root_logger
from basicsr.utils.dist_util import master_only
from basicsr.utils.registry import MODEL_REGISTRY

#: Each stage's logged losses and validation results, one JSON object a line.
CURVES_FILE = 'curves.jsonl'


class NonFiniteLossError(RuntimeError):
    """Too many consecutive non-finite losses or gradients."""


def rng_state():
    """Torch (CPU and CUDA), numpy and Python RNG states in a ``weights_only``-loadable form."""
    np_state = np.random.get_state()
    state = {
        'torch': torch.get_rng_state(),
        'numpy': {'keys': torch.from_numpy(np_state[1].astype(np.int64)), 'pos': int(np_state[2]),
                  'has_gauss': int(np_state[3]), 'gauss': float(np_state[4])},
        'python': random.getstate(),
    }
    if torch.cuda.is_available():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    # resume states are loaded onto the training device; RNG states must be CPU byte tensors
    torch.set_rng_state(state['torch'].cpu())
    n = state['numpy']
    np.random.set_state(('MT19937', n['keys'].cpu().numpy().astype(np.uint32), n['pos'], n['has_gauss'], n['gauss']))
    py = state['python']
    random.setstate((py[0], tuple(py[1]), py[2]))
    if 'cuda' in state and torch.cuda.is_available() and len(state['cuda']) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([t.cpu() for t in state['cuda']])


@MODEL_REGISTRY.register()
class WarmStartModel(SRModel):
    """SRModel with the contrastive loss and the safety guards listed in the module docstring."""

    _train_sampler = None  # set by attach_sampler: its position is saved with each training state

    def _layout(self):
        """(training precision, validation precision, channels_last) resolved once for this device."""
        if not hasattr(self, 'precision'):
            train = self.opt.get('train') or {}
            self.precision = resolve_precision(train.get('precision', 'auto'), self.device)
            # testing (BasicSR's test pipeline) keeps SRModel's NCHW layout unless asked: the same pixels as SRModel
            default = 'auto' if self.opt.get('is_train') else False
            self.channels_last = resolve_channels_last(train.get('channels_last', default), self.device)
            val = (self.opt.get('val') or {}).get('precision', 'fp32')
            self.val_precision = self.precision if val == 'train' else resolve_precision(val, self.device)
            get_root_logger().info(f'Precision: train {self.precision}, validation {self.val_precision}, '
                                   f'channels_last {self.channels_last}, on {describe(self.device)}')
        return self.precision, self.val_precision, self.channels_last

    def _freeze(self, net):
        """``train: trainable_g`` (a list of parameter-name prefixes, e.g. ``[upsampler.0.]``): only those weights
        train; the rest keeps its weights (BasicSR's optimizer skips parameters without gradients). The learned
        activation ranges of an int8 stage (``train.qat.ranges: learned``) are not weights: they all train. Set
        before DDP wraps the network."""
        prefixes = (self.opt.get('train') or {}).get('trainable_g') if self.opt.get('is_train') else None
        if not prefixes:
            return
        names = [n for n, p in net.named_parameters()
                 if p.requires_grad_(n.startswith(tuple(prefixes)) or bool(QUANT_KEY_RE.search(n))).requires_grad]
        if not names:
            raise ValueError(f'train.trainable_g {list(prefixes)}: no parameter of the network starts with these')
        get_root_logger().info(f'Training only {len(names)} tensors: {", ".join(names[:4])}'
                               f'{", ..." if len(names) > 4 else ""}')

    def _int8(self, net):
        """``train: qat: {convs: ...}``: the network trains with int8 fake quantization
        (:func:`rlfn_arch.archs.qat.prepare_qat`), set up before its weights load and before DDP wraps it."""
        qat = (self.opt.get('train') or {}).get('qat') if self.opt.get('is_train') else None
        if qat is None:
            return net
        qat = qat_settings(qat)
        prepare_qat(net, qat['convs'], qat['calibration_batches'], qat['weight_bits'], qat['ranges'], qat['placement'])
        get_root_logger().info(f'int8 quantization-aware training: {len(net.int8_convs)} convs in int8 '
                               f'({net.int8_preset}, {qat["weight_bits"]}-bit weights, {qat["ranges"]} activation '
                               f'ranges, {qat["placement"]} placement), fake quantization in fp32')
        return net

    def model_to_device(self, net):
        net = self._int8(net)
        self._freeze(net)
        if self._layout()[2]:
            net = net.to(memory_format=torch.channels_last)
        if self.opt['dist'] and self.device.type != 'cuda':
            net = net.to(self.device)
            return DistributedDataParallel(net, find_unused_parameters=self.opt.get('find_unused_parameters', False))
        return super().model_to_device(net)

    def init_training_settings(self):
        train_opt = self.opt['train']
        self.cri_contrast = build_loss(train_opt['contrastive_opt']).to(self.device) \
            if train_opt.get('contrastive_opt') else None
        self.max_nonfinite = int(train_opt.get('max_nonfinite', 10))
        self.nonfinite_count = 0
        self.scaler = torch.amp.GradScaler(self.device.type) if self._layout()[0] == 'fp16' else None
        if self.opt['path'].get('save_init') and self.opt['rank'] == 0:  # a fresh stage (not a resume)
            os.makedirs(self.opt['path']['models'], exist_ok=True)
            self.save_network(self.net_g, 'net_g', 'init')  # the exact weights the stage starts from
        super().init_training_settings()
        if self.channels_last and hasattr(self, 'net_g_ema'):
            self.net_g_ema = self.net_g_ema.to(memory_format=torch.channels_last)
        self.float_target = self._float_network()

    def _float_network(self):
        """``train: qat: {target: float}`` (the default of an int8 stage): the float network the int8 network
        learns to reproduce, with the weights the stage started from (a fresh stage: the weights just loaded; a
        resumed one: ``models/net_g_init.pth``, which the fresh stage saved). None for any other stage."""
        qat = self.opt['train'].get('qat')
        if qat is None or qat_settings(qat)['target'] != 'float':
            return None
        path = self.opt['path']
        if path.get('resume_state') or path.get('save_init') is False:  # resumed (BasicSR's or the stage runner's)
            init = os.path.join(path['models'], 'net_g_init.pth')
            if not os.path.isfile(init):
                raise CheckpointError(f'{init} is missing: a resumed int8 stage with train.qat.target: float learns '
                                      'the output of the weights it started from, which the stage saved there')
            weights = select_weights(safe_load(init), init)[0]
        else:
            weights = self.get_bare_model(self.net_g).state_dict()
        net = build_network(deepcopy(self.opt['network_g']))
        net.load_state_dict(split_quant_state(weights)[0])
        get_root_logger().info('int8 target: the float network\'s output (the weights the stage started from)')
        return net.to(self.device).eval().requires_grad_(False)

    def feed_data(self, data):
        super().feed_data(data)
        if self._layout()[2]:
            self.lq = self.lq.contiguous(memory_format=torch.channels_last)
            if hasattr(self, 'gt'):
                self.gt = self.gt.contiguous(memory_format=torch.channels_last)

    def test(self):
        """BasicSR's forward for validation, through the bare network: under DDP, BasicSR validates on rank 0
        alone, and a DDP forward of a network with buffers (an int8 stage's quantizers) broadcasts them, a
        collective the other ranks never join (the run hung at its first validation)."""
        wrapped = self.net_g
        self.net_g = self.get_bare_model(wrapped)
        try:
            with autocast(self.device, self._layout()[1]):
                super().test()
        finally:
            self.net_g = wrapped
        self.output = self.output.float().contiguous()

    def _stage(self):
        return self.opt.get('stage') or self.opt['name']

    def _all_finite(self, value):
        """True on every rank iff finite on every rank (so no rank skips a DDP all-reduce alone)."""
        flag = torch.tensor([1.0 if bool(torch.isfinite(value).all()) else 0.0], device=self.device)
        if self.opt['dist']:
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
        return bool(flag.item() == 1.0)

    def _losses(self):
        """The weighted losses of the current batch (fp32 scalars) in logging order."""
        loss_dict = OrderedDict()
        if self.cri_pix:
            loss_dict['l_pix'] = self.cri_pix(self.output, self.gt)
        if self.cri_perceptual:
            l_percep, l_style = self.cri_perceptual(self.output, self.gt)
            for name, value in (('l_percep', l_percep), ('l_style', l_style)):
                if value is not None:
                    loss_dict[name] = value
        if self.cri_contrast:
            loss_dict['l_contrast'] = self.cri_contrast(self.output, self.gt, self.lq)
        return loss_dict

    def _grads_finite(self):
        grads = [p.grad for p in self.net_g.parameters() if p.grad is not None]
        gnorm = torch.stack([g.detach().float().norm() for g in grads]).sum() if grads else torch.zeros(1)
        return self._all_finite(gnorm)

    # ------------------------------------------------------------------------------------ curves
    def _curve(self, **entry):
        """Append one JSON line to the stage's ``curves.jsonl`` (rank 0; a kill can only cut the last line,
        which the reader skips)."""
        if self.opt['rank'] != 0 or not self.opt['path'].get('experiments_root'):
            return
        with open(os.path.join(self.opt['path']['experiments_root'], CURVES_FILE), 'a', encoding='utf-8') as f:
            f.write(json.dumps(entry) + '\n')

    def get_current_log(self):
        log = super().get_current_log()
        self._curve(iter=getattr(self, 'current_iter', 0), loss={k: float(v) for k, v in log.items()})
        return log

    def nondist_validation(self, dataloader, current_iter, tb_logger, save_img):
        super().nondist_validation(dataloader, current_iter, tb_logger, save_img)
        if self.opt['val'].get('metrics') is not None:
            self._curve(iter=current_iter, val=dataloader.dataset.opt['name'],
                        metrics={k: float(v) for k, v in self.metric_results.items()})

    def optimize_parameters(self, current_iter):
        self.current_iter = current_iter
        self.optimizer_g.zero_grad(set_to_none=True)
        if self.float_target is not None:  # the int8 network learns the float network's output for this patch
            with torch.no_grad():
                self.gt = self.float_target(self.lq)
        with autocast(self.device, self._layout()[0]):
            self.output = self.net_g(self.lq)
            loss_dict = self._losses()
        l_total = sum(v.float() for v in loss_dict.values())  # reductions and the sum in fp32
        loss_dict['l_total'] = l_total

        ok = self._all_finite(l_total.detach())
        what = 'loss'
        if ok and self.scaler is not None:
            self.scaler.scale(l_total).backward()
            self.scaler.unscale_(self.optimizer_g)
            grads_ok = self._grads_finite()
            scale = self.scaler.get_scale()
            self.scaler.step(self.optimizer_g)  # skips the update itself when the gradients overflowed
            self.scaler.update()
            self.nonfinite_count = 0  # an overflow is loss scaling at work, not a failure
            if grads_ok:
                if self.ema_decay > 0:
                    self.model_ema(decay=self.ema_decay)
            else:
                self.scaler_skips = getattr(self, 'scaler_skips', 0) + 1
                get_root_logger().info(f'fp16 gradients overflowed at iter {current_iter} (stage {self._stage()}): '
                                       f'step skipped, loss scale {scale:g} -> {self.scaler.get_scale():g}')
        elif ok:
            l_total.backward()
            ok = self._grads_finite()
            what = 'gradient'
        if ok and self.scaler is None:
            self.optimizer_g.step()
            self.nonfinite_count = 0
            if self.ema_decay > 0:
                self.model_ema(decay=self.ema_decay)
        elif not ok:
            self.optimizer_g.zero_grad(set_to_none=True)
            self.nonfinite_count += 1
            logger = get_root_logger()
            logger.warning(f'non-finite {what} at iter {current_iter} (stage {self._stage()}): update skipped '
                           f'({self.nonfinite_count} in a row, limit train.max_nonfinite={self.max_nonfinite})')
            if self.nonfinite_count >= self.max_nonfinite:
                raise NonFiniteLossError(
                    f'stage {self._stage()}: {self.nonfinite_count} consecutive non-finite losses/gradients at iter '
                    f'{current_iter}; stopping. The last good checkpoint in {self.opt["path"]["models"]} is intact. '
                    'Lower the learning rate or check the data, then resume with --auto_resume.')
        self.log_dict = self.reduce_loss_dict(OrderedDict(
            (k, v.detach() if torch.is_tensor(v) else torch.tensor(float(v))) for k, v in loss_dict.items()))

    # ------------------------------------------------------------------------------------ saving
    def _check_finite_weights(self, nets, what):
        for net in nets:
            try:
                check_finite(self.get_bare_model(net).state_dict(), what)
            except CheckpointError as e:
                raise NonFiniteLossError(f'refusing to save: {e} (stage {self._stage()})') from e

    @master_only
    def save_network(self, net, net_label, current_iter, param_key='params'):
        label = 'latest' if current_iter == -1 else current_iter
        save_path = os.path.join(self.opt['path']['models'], f'{net_label}_{label}.pth')
        nets = net if isinstance(net, list) else [net]
        keys = param_key if isinstance(param_key, list) else [param_key]
        self._check_finite_weights(nets, save_path)
        save_dict = {}
        for net_, key in zip(nets, keys):
            state_dict = self.get_bare_model(net_).state_dict()
            save_dict[key] = OrderedDict((k, v.detach().cpu().clone()) for k, v in strip_module(state_dict).items())
        atomic_save(save_dict, save_path)

    @master_only
    def save_training_state(self, epoch, current_iter):
        if current_iter == -1:
            return
        state = {'epoch': epoch, 'iter': current_iter, 'optimizers': [o.state_dict() for o in self.optimizers],
                 'schedulers': [s.state_dict() for s in self.schedulers], 'rng': rng_state(),
                 'stage': self._stage()}
        if self.scaler is not None:
            state['scaler'] = self.scaler.state_dict()
        if self._train_sampler is not None:
            state['sampler'] = self._train_sampler.state(epoch, current_iter)
        atomic_save(state, os.path.join(self.opt['path']['training_states'], f'{current_iter}.state'))

    def attach_sampler(self, sampler):
        """Save ``sampler.state(epoch, iter)`` (its position in the epoch) with every training state.

        Args:
            sampler: the training sampler (:class:`rlfn_arch.data.sampler.ResumableSampler`).
        """
        self._train_sampler = sampler

    def resume_training(self, resume_state):
        super().resume_training(resume_state)
        if 'rng' in resume_state:
            set_rng_state(resume_state['rng'])
        if self.scaler is not None and 'scaler' in resume_state:
            self.scaler.load_state_dict(resume_state['scaler'])

    def load_network(self, net, load_path, strict=True, param_key='params'):
        logger = get_root_logger()
        net = self.get_bare_model(net)
        load_net, param_key = select_weights(safe_load(load_path), load_path, param_key)
        load_net = OrderedDict(strip_module(load_net))
        check_finite(load_net, load_path)
        logger.info(f'Loading {net.__class__.__name__} model from {load_path}, with param key: [{param_key}].')
        mode = self.opt['path'].get('cross_scale_g')
        if mode and load_path == self.opt['path'].get('pretrain_network_g'):
            ema = getattr(self, 'net_g_ema', None)
            if ema is not None and net is self.get_bare_model(ema):  # the EMA starts as the network, fresh head too
                net.load_state_dict(self.get_bare_model(self.net_g).state_dict())
                return
            sd, notes = cross_scale_state(load_net, net, load_path, mode)  # path.cross_scale_g: the plan checked it
            net.load_state_dict(sd, strict=True)
            for note in notes:
                logger.info(f'Across scales: {note}')
            return
        if strict and isinstance(net, RLFN):  # official key layouts and the [0, 255] range, decided in one place
            sd, factor = adopt_weights(load_net, net, load_path)
            if factor != 1:
                logger.info(f'{load_path} works in [0, {factor:g}] (an official file as released): folded into [0, 1]')
            quant = split_quant_state(load_net)[1]
            if quant and getattr(net, 'int8_convs', None):  # resuming int8 training: its observed ranges too
                problem = int8_state_problem(load_net, {'convs': net.int8_preset, 'ranges': net.int8_ranges,
                                                        'weight_bits': net.int8_weight_bits,
                                                        'placement': net.int8_placement})
                if problem:
                    raise CheckpointError(f'{load_path}: {problem}')
                net.load_state_dict({**sd, **quant}, strict=True)
            return
        if not strict:  # strict_load_g: false loads what fits and names the rest (as BasicSR does)
            own = net.state_dict()
            for k in sorted(set(own) ^ set(load_net)):
                logger.warning(f'Loading: {k} is only in the {"network" if k in own else "checkpoint"}')
            for k in [k for k in own if k in load_net and own[k].shape != load_net[k].shape]:
                logger.warning(f'Loading: {k} not loaded: checkpoint {tuple(load_net[k].shape)}, network '
                               f'{tuple(own[k].shape)}')
                load_net.pop(k)
        net.load_state_dict(load_net, strict=strict)


def _allow_list():
    """Types our training states hold besides tensors and builtins (for ``weights_only=True``)."""
    torch.serialization.add_safe_globals([Counter])


_allow_list()
