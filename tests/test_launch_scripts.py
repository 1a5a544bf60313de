"""sweeps/*.sh pass their arguments through: run with stub `pip`, `nvidia-smi`, `xdistill`,
`srun`, `gcloud` on PATH that record what they receive (one file per call, NUL-separated
arguments, so that arguments with spaces or newlines survive)."""

import pathlib
import stat
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
STUB = ('#!/usr/bin/env bash\n'
        'printf "%s\\0" "$@" > "{log}/$(date +%s%N)-$(basename "$0")"\n')
RUNS = 'srun'  # runs its command, as SLURM's srun does
DEFAULT_WORKDIR = {'gpu_single': 'runs/gpu_single', 'gpu_multi': 'runs/gpu_multi',
                   'slurm_multinode': 'runs/slurm', 'tpu_slice': '/mnt/runs/tpu_slice'}
ARGS = [
    [],
    ['configs/ntdh_kclass.py'],
    ['configs/ntdh_kclass.py', 'runs/my dir'],
    ['configs/ntdh_kclass.py', 'runs/my dir', '--config.runs=3'],
    ['configs/ntdh_kclass.py', 'runs/my dir', '--config.runs=3', '--config.overlaps=(0, 4)'],
]


def _stubs(tmp_path) -> tuple[dict, pathlib.Path]:
  bin_dir, log = tmp_path / 'bin', tmp_path / 'calls'
  bin_dir.mkdir()
  log.mkdir()
  for name in ('pip', 'nvidia-smi', 'xdistill', 'srun', 'gcloud'):
    body = STUB.format(log=log)
    if name == RUNS:
      body += '"$@"\n'
    path = bin_dir / name
    path.write_text(body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
  env = {'PATH': f'{bin_dir}:/usr/bin:/bin', 'HOME': str(tmp_path), 'TPU': 'slice',
         'ZONE': 'zone-a'}
  return env, log


def _calls(log: pathlib.Path) -> list[tuple[str, list[str]]]:
  """(program, arguments) of every stub call, in call order."""
  calls = []
  for path in sorted(log.iterdir(), key=lambda p: int(p.name.split('-')[0])):
    args = path.read_text().split('\0')
    calls.append((path.name.split('-', 1)[1], args[:-1]))
  return calls


def _expected(script, args, distributed):
  config = args[0] if args else 'configs/ntdh_overlap.py'
  workdir = args[1] if len(args) > 1 else DEFAULT_WORKDIR[script]
  return (['run'] + (['--distributed'] if distributed else [])
          + [f'--config={config}', f'--workdir={workdir}'] + args[2:])


def _run(script, args, env, cwd=ROOT):
  result = subprocess.run(['bash', str(ROOT / 'sweeps' / f'{script}.sh'), *args], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=60)
  assert result.returncode == 0, result.stderr


@pytest.mark.parametrize('args', ARGS, ids=lambda a: f'{len(a)}_args')
@pytest.mark.parametrize('script', ['gpu_single', 'gpu_multi', 'slurm_multinode'])
def test_local_scripts_pass_config_workdir_and_flags(tmp_path, script, args):
  env, log = _stubs(tmp_path)
  _run(script, args, env)
  calls = _calls(log)
  xdistill = [a for name, a in calls if name == 'xdistill']
  assert xdistill == [_expected(script, args, distributed=script == 'slurm_multinode')]
  if script.startswith('gpu'):
    assert [a for name, a in calls if name == 'pip'] == [['install', '-U', 'jax[cuda12]'],
                                                         ['install', '-e', '.']]


def test_slurm_script_reads_config_and_workdir_from_the_environment(tmp_path):
  env, log = _stubs(tmp_path)
  _run('slurm_multinode', [], env | {'CONFIG': 'configs/cmcd_tv.py', 'WORKDIR': 'runs/c'})
  assert [a for name, a in _calls(log) if name == 'xdistill'] == [
      ['run', '--distributed', '--config=configs/cmcd_tv.py', '--workdir=runs/c']]


@pytest.mark.parametrize('args', ARGS, ids=lambda a: f'{len(a)}_args')
def test_tpu_script_sends_a_remote_command_that_parses_back_to_the_arguments(tmp_path, args):
  env, log = _stubs(tmp_path)
  _run('tpu_slice', args, env)
  (name, gcloud), = _calls(log)
  assert name == 'gcloud'
  assert gcloud[:6] == ['compute', 'tpus', 'tpu-vm', 'ssh', 'slice', '--zone=zone-a']
  assert gcloud[6] == '--worker=all' and gcloud[7].startswith('--command=')
  # What each worker's shell would run, in a checkout with the same stubs on PATH.
  worker = tmp_path / 'worker'
  (worker / 'xdistill_jax').mkdir(parents=True)
  for path in log.iterdir():
    path.unlink()
  subprocess.run(['bash', '-c', gcloud[7][len('--command='):]], cwd=worker, env=env,
                 check=True, timeout=60)
  calls = _calls(log)
  assert [a for n, a in calls if n == 'xdistill'] == [_expected('tpu_slice', args, True)]
  assert [a for n, a in calls if n == 'pip'] == [['install', '-U', 'jax[tpu]'],
                                                  ['install', '-e', '.']]


def test_tpu_script_needs_the_slice_and_zone(tmp_path):
  env, log = _stubs(tmp_path)
  del env['TPU']
  result = subprocess.run(['bash', str(ROOT / 'sweeps' / 'tpu_slice.sh')], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
  assert result.returncode != 0 and 'TPU' in result.stderr and not list(log.iterdir())


@pytest.mark.parametrize('args', ARGS, ids=lambda a: f'{len(a)}_args')
def test_slurm_array_script_runs_the_shard_of_its_array_task(tmp_path, args):
  env, log = _stubs(tmp_path)
  _run('slurm_array', args, env | {'SLURM_ARRAY_TASK_ID': '3', 'SLURM_ARRAY_TASK_COUNT': '8'})
  config = args[0] if args else 'configs/ntdh_overlap.py'
  workdir = args[1] if len(args) > 1 else 'runs/slurm_array'
  assert [a for name, a in _calls(log) if name == 'xdistill'] == [
      ['run', f'--config={config}', f'--workdir={workdir}', '--shard=3/8'] + args[2:]]


def test_slurm_array_script_counts_shards_from_the_first_task_id(tmp_path):
  env, log = _stubs(tmp_path)  # sbatch --array=1-4: task ids 1..4 are shards 0..3
  _run('slurm_array', [], env | {'SLURM_ARRAY_TASK_ID': '4', 'SLURM_ARRAY_TASK_COUNT': '4',
                                 'SLURM_ARRAY_TASK_MIN': '1', 'CONFIG': 'configs/cmcd_tv.py',
                                 'WORKDIR': 'runs/c'})
  assert [a for name, a in _calls(log) if name == 'xdistill'] == [
      ['run', '--config=configs/cmcd_tv.py', '--workdir=runs/c', '--shard=3/4']]


def test_slurm_array_script_needs_an_array_job(tmp_path):
  env, log = _stubs(tmp_path)
  result = subprocess.run(['bash', str(ROOT / 'sweeps' / 'slurm_array.sh')], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
  assert result.returncode != 0 and 'SLURM_ARRAY_TASK_ID' in result.stderr
  assert not list(log.iterdir())
