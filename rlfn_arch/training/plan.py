"""Stage plans: everything a training run will do, decided before it does anything.

:func:`build_plans` turns the merged options of every stage (:func:`rlfn_arch.training.stages.stage_options`)
into one frozen :class:`StagePlan` per stage: its folder, its finalized BasicSR options, the weights it
starts from, the training state it resumes, its precision, and whether it is skipped (finished) or its
unfinished folder is archived first. Building the plans reads files (``stages.json``, the newest training
states, the checkpoints a stage resumes or warm-starts from) and writes none, so every refusal (an unsafe
folder, a corrupt ``stages.json``, a network that no longer fits its checkpoints) comes before anything is
created, moved or archived. The runner executes plans; the BasicSR seam, the model and the report only
read them (``python -m rlfn_arch.train -opt FILE --dry_run`` prints them and exits).
"""
import dataclasses
import json
import os
from os import path as osp
from types import MappingProxyType
from typing import Optional

import torch

from rlfn_arch.utils.checkpoint import CheckpointError, network_fit_problem, safe_load, select_weights
from rlfn_arch.utils.fs import require_real_folder_inside
from rlfn_arch.utils.options import OptionError, freeze, load_options, thaw
from rlfn_arch.utils.options.schema import LOSS_KEYS, qat_settings
from rlfn_arch.utils.precision import resolve_precision
from rlfn_arch.utils.runtime import finalize

from .records import STAGES_JSON, StageRecords, find_resume_state

#: Files the runner writes into the experiment folder: a stage may not be named like one of them.
#: The int8 model a run whose last stage trained for int8 (``train: qat``) ends with.
INT8_FINAL = 'net_g_final_int8.onnx'
RESERVED_NAMES = (STAGES_JSON, 'net_g_final.pth', 'net_g_final.safetensors', INT8_FINAL)


@dataclasses.dataclass(frozen=True)
class StagePlan:
    """One stage of a run, decided before the run starts.

    Attributes:
        index (int): position in the run (0-based).
        label (str): the stage's name (``train`` when the option file has no ``stages:``).
        folder (str): the stage's folder (the experiment folder itself when there are no stages).
        options (Mapping): the finalized BasicSR options, read-only (``thaw(plan.options)`` to hand on).
        init_from (str | None): the checkpoint the network starts from (resume checkpoint, the previous
            stage's final weights, or the user's ``pretrain_network_g``).
        init_key (str): the key of ``init_from`` that holds the weights (``params`` or ``params_ema``).
        init_kind (str): ``random``, ``pretrain`` (the option file's), ``previous stage`` or ``resume``.
        resume_state (str | None): the training state this stage resumes from.
        precision (str): the precision the stage trains in on this machine (``auto`` resolved).
        skip (bool): the stage finished in an earlier run (``--auto_resume``); it is not run again.
        archive_first (bool): the stage's folder holds an unfinished run with no loadable training state:
            it is renamed to ``<stage>_archived_<time>`` before the stage starts over (nothing is deleted).
    """
    index: int
    label: str
    folder: str
    options: MappingProxyType
    init_from: Optional[str]
    init_key: str
    init_kind: str
    resume_state: Optional[str]
    precision: str
    skip: bool
    archive_first: bool

    @property
    def final(self):
        """The stage's final weights: ``models/net_g_latest.pth`` in its folder."""
        return osp.join(self.folder, 'models', 'net_g_latest.pth')

    def describe(self):
        """The plan as indented lines (``--dry_run`` and ``--debug`` print them)."""
        o = self.options
        what = ('skip (finished)' if self.skip else
                f'resume from {self.resume_state}' if self.resume_state else
                'archive the unfinished folder, then start' if self.archive_first else 'start')
        train = o['train']
        ds = o['datasets']['train']
        mode = o['path'].get('cross_scale_g')
        across = f', across scales (upsampler.0: {mode})' if mode else ''
        only = f'; trains only {", ".join(train["trainable_g"])}*' if train.get('trainable_g') else ''
        if train.get('qat'):
            qat = qat_settings(train['qat'])
            target = "the float network's output" if qat['target'] == 'float' else 'the HR patches'
            bits = '' if qat['weight_bits'] == 8 else f', {qat["weight_bits"]}-bit weights'
            ranges = ', learned ranges' if qat['ranges'] == 'learned' else ''
            placement = ', 8-bit inputs only (int8 in OpenVINO)' if qat['placement'] == 'inputs' else ''
            only += f'; int8 convs {qat["convs"]} (quantization-aware, learns {target}{bits}{ranges}{placement})'
        return '\n'.join([
            f'stage {self.index + 1}: {self.label}  [{what}]',
            f'  folder      {self.folder}',
            f'  network     {dict(o["network_g"])}',
            f'  init from   {self.init_kind}{f": {self.init_from} ({self.init_key})" if self.init_from else ""}'
            f'{across}',
            f'  iterations  {train["total_iter"]}, lr {train["optim_g"]["lr"]}, '
            f'scheduler {train["scheduler"]["type"]}, ema {train.get("ema_decay", 0)}',
            f'  losses      {", ".join(k for k in LOSS_KEYS if train.get(k))}'
            f'{only}',
            f'  data        {ds.get("dataroot_gt")} (batch {ds.get("batch_size_per_gpu")}, '
            f'gt_size {ds.get("gt_size")})',
            f'  precision   {self.precision}, device {"cuda x%d" % o["num_gpu"] if o["num_gpu"] else "cpu"}, '
            f'seed {o["manual_seed"]}',
        ])


def _records(exp_root, auto_resume):
    """The run's stage records (empty without --auto_resume: the old folder is archived)."""
    path = osp.join(exp_root, STAGES_JSON)
    if not auto_resume or not osp.isfile(path):
        return StageRecords(path, rank=-1, data={'stages': {}})
    try:
        return StageRecords(path, rank=-1)
    except (ValueError, OSError) as e:  # JSONDecodeError, a file that is not a mapping, unreadable
        raise OptionError(
            f'{path}: cannot be read ({e}); it records which stages finished. Nothing was changed. Move it aside '
            'and rerun with --auto_resume to resume from the checkpoints, or rerun without --auto_resume to '
            'archive this experiment and start anew') from e


def _changed_network_keys(opt, folder, label):
    """The network_g keys that differ from the copy of the options the stage last ran with."""
    saved = osp.join(folder, f'{label}.yml')
    try:
        old = load_options(saved).get('network_g') or {}
    except (OptionError, OSError):
        return []
    new = opt['network_g']
    return [f'network_g.{k}: {old.get(k)!r} -> {new.get(k)!r}' for k in sorted(set(old) | set(new), key=str)
            if old.get(k) != new.get(k)]


def _check_fit(opt, ckpt_path, key, label, folder, what):
    """Refuse (OptionError) when the stage's network_g does not fit the checkpoint it must load."""
    try:
        sd = select_weights(safe_load(ckpt_path), ckpt_path, key)[0]
    except CheckpointError as e:
        raise OptionError(f'stage {label}: {what}: {e}. Nothing was changed') from e
    problem = network_fit_problem(sd, opt['network_g'])
    if problem:
        changed = _changed_network_keys(opt, folder, label)
        why = f'; the option file changed {", ".join(changed)}' if changed else ''
        raise OptionError(f'stage {label}: {what} {ckpt_path} does not fit network_g ({problem}){why}. Put the '
                          'network_g it was trained with back, or train under another name')


def _stage_plan(k, stage, opt, ctx, prev):
    """The plan of stage ``k`` (``prev``: the previous stage's plan or None)."""
    label = stage or 'train'
    folder = osp.join(ctx['exp_root'], stage) if stage else ctx['exp_root']
    if stage:
        require_real_folder_inside(folder, ctx['exp_root'], 'use')
    opt['dist'], opt['rank'], opt['world_size'] = ctx['launcher'] != 'none', ctx['rank'], ctx['world']
    opt['auto_resume'] = ctx['auto_resume']
    opt['stage'] = label
    opt['name'] = f'{ctx["name"]}_{stage}' if stage else ctx['name']
    finalize(opt, ctx['root'], is_train=True, experiments_root=folder, source=ctx['source'])
    rec = ctx['records'].get(label)
    skip = rec.get('status') == 'done' and osp.isfile(rec.get('final', ''))
    if skip:  # what the next stage or the final model will load: checked now, as the run would see it
        key = 'params_ema' if opt['train'].get('ema_decay', 0) else 'params'
        _check_fit(opt, rec['final'], key, label, folder,
                   f'{STAGES_JSON} marks this stage finished, but its final weights')
    resume_path, init_from = None, opt['path'].get('pretrain_network_g')
    init_key, kind = opt['path'].get('param_key_g', 'params'), 'pretrain' if init_from else 'random'
    if not skip and ctx['auto_resume']:
        state, resume_path = find_resume_state(folder, torch.device('cpu'), log=ctx['log'])
        if state is not None:
            init_from, init_key, kind = osp.join(folder, 'models', f'net_g_{state["iter"]}.pth'), 'params', 'resume'
            _check_fit(opt, init_from, 'params', label, folder, 'resuming: the checkpoint')
    if resume_path is None and not skip and prev is not None and not ctx['own_pretrain'][k]:
        init_from, kind = prev.final, 'previous stage'
        init_key = 'params_ema' if prev.options['train'].get('ema_decay', 0) else 'params'
        if osp.isfile(init_from):
            _check_fit(opt, init_from, init_key, label, folder, f'warm start from stage {prev.label}:')
    if init_from:
        opt['path'].update(pretrain_network_g=init_from, param_key_g=init_key, strict_load_g=True)
    # across scales applies to the option file's own pretrain_network_g only (a resume or the previous stage
    # holds this stage's scale)
    opt['path']['cross_scale_g'] = opt['path'].get('cross_scale_g') if kind == 'pretrain' else None
    opt['path']['save_init'] = resume_path is None  # WarmStartModel keeps models/net_g_init.pth
    # an unfinished stage with nothing to resume from starts over; what its folder holds is archived
    archive = (not skip and resume_path is None and ctx['auto_resume'] and osp.isdir(folder)
               and any(e != STAGES_JSON for e in os.listdir(folder)))
    # decided once, here: the model trains in the plan's precision (written into its options)
    # an int8 (quantization-aware) stage trains in fp32: the int8 model's float operations are fp32
    asked = 'fp32' if opt['train'].get('qat') else opt['train'].get('precision')
    precision = opt['train']['precision'] = resolve_precision(asked, 'cuda' if opt['num_gpu'] else 'cpu')
    return StagePlan(index=k, label=label, folder=folder, options=freeze(opt), init_from=init_from,
                     init_key=init_key, init_kind=kind, resume_state=resume_path, precision=precision, skip=skip,
                     archive_first=archive)


def build_plans(raw, stage_list, root, source, auto_resume=False, rank=0, world=1, launcher='none', log=print):
    """The plan of every stage, checked; reads files, writes none.

    Args:
        raw (dict): the loaded option file (``name``, ``stages``).
        stage_list (list[tuple[str | None, dict]]): the merged options of each stage (consumed: finalized).
        root (str): the project root (``experiments/`` lives there).
        source (str): the option file's path, for messages.
        auto_resume (bool): continue an earlier run of the same name.

    Returns:
        tuple[str, str, list[StagePlan]]: the resolved experiments root, the experiment folder, the plans.

    Raises:
        OptionError: a stage name the runner cannot use, a corrupt ``stages.json``, a checkpoint that
            no longer fits ``network_g``.
        UnsafePathError: the experiment or a stage folder is a symbolic link leaving the experiments root.
    """
    experiments = osp.realpath(osp.join(root, 'experiments'))  # resolve the root first: links inside it are checked
    name = raw['name']
    exp_root = osp.join(experiments, name)
    require_real_folder_inside(exp_root, experiments, 'use')
    for stage, _ in stage_list:
        if stage in RESERVED_NAMES or (stage or '').endswith(('.pth', '.json', '.safetensors', '.state', '.log',
                                                              '.onnx')):
            raise OptionError(f'{source}: stages: {stage!r} is the name of a file the runner writes into the '
                              'experiment folder; give the stage another name')
    entries = raw.get('stages') or [None]
    ctx = dict(exp_root=exp_root, root=root, name=name, source=source, auto_resume=auto_resume, rank=rank,
               world=world, launcher=launcher, log=log, records=_records(exp_root, auto_resume),
               own_pretrain=[bool(((e or {}).get('path') or {}).get('pretrain_network_g')) for e in entries])
    plans, prev = [], None
    for k, (stage, opt) in enumerate(stage_list):
        plan = _stage_plan(k, stage, opt, ctx, prev)
        plans.append(plan)
        prev = plan
    return experiments, exp_root, plans


def plans_json(plans):
    """The plans as JSON text (for tools and tests)."""
    return json.dumps([{f.name: thaw(getattr(p, f.name)) for f in dataclasses.fields(p)} for p in plans], indent=1,
                      default=str)
