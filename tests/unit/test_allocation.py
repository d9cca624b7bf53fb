"""Allocation.from_env over environments as SLURM 22.05 sets them (batch script and srun steps)."""

import pytest

from hpctune.errors import ClusterError
from hpctune.slurm.allocation import Allocation, expand_counts, expand_hostlist

# What `srun -N3 --ntasks-per-node=1` inside `sbatch -N3 --gres=gpu:2` sets on the 2nd node.
STEP_ENV = {
    "SLURM_JOB_ID": "4711",
    "SLURM_JOBID": "4711",
    "SLURM_STEP_ID": "0",
    "SLURM_STEPID": "0",
    "SLURM_JOB_NODELIST": "n[1-3]",
    "SLURM_NODELIST": "n[1-3]",
    "SLURM_STEP_NODELIST": "n[1-3]",
    "SLURM_JOB_NUM_NODES": "3",
    "SLURM_STEP_NUM_NODES": "3",
    "SLURM_NODEID": "1",
    "SLURM_PROCID": "1",
    "SLURM_LOCALID": "0",
    "SLURM_NTASKS": "3",
    "SLURM_STEP_TASKS_PER_NODE": "1(x3)",
    "SLURM_TASKS_PER_NODE": "1(x3)",
    "SLURM_CPUS_ON_NODE": "4",
    "SLURM_JOB_CPUS_PER_NODE": "4(x3)",
    "SLURM_GPUS_ON_NODE": "2",
    "SLURM_JOB_GPUS": "0,1",
    "SLURM_STEP_GPUS": "0,1",
    "CUDA_VISIBLE_DEVICES": "0,1",
    "SLURMD_NODENAME": "n2",
    "SLURM_SUBMIT_DIR": "/home/ada/project",
    "SLURM_MEM_PER_NODE": "1024",
}

# The batch script of the same job (no step variables, no SLURM_NODEID on some versions).
BATCH_ENV = {
    "SLURM_JOB_ID": "4711",
    "SLURM_JOB_NODELIST": "n[1-3]",
    "SLURM_JOB_NUM_NODES": "3",
    "SLURM_CPUS_ON_NODE": "4",
    "SLURM_JOB_CPUS_PER_NODE": "4(x3)",
    "SLURM_TASKS_PER_NODE": "1(x3)",
    "SLURMD_NODENAME": "n1",
    "SLURM_SUBMIT_DIR": "/home/ada/project",
    "SLURM_RESTART_COUNT": "2",
    "SLURM_MEM_PER_CPU": "1500",
}


@pytest.mark.parametrize(
    "hostlist, hosts",
    [
        ("n1", ["n1"]),
        ("n[1-3]", ["n1", "n2", "n3"]),
        ("n[1-3,07],gpu-a[01-02]", ["n1", "n2", "n3", "n07", "gpu-a01", "gpu-a02"]),
        ("node[098-101]", ["node098", "node099", "node100", "node101"]),
        ("a1,b2,c[3]", ["a1", "b2", "c3"]),
        ("rack[1-2]-n[01-02]", ["rack1-n01", "rack1-n02", "rack2-n01", "rack2-n02"]),
        ("cn-0[1-2].cluster", ["cn-01.cluster", "cn-02.cluster"]),
        (" n[1-2] ", ["n1", "n2"]),
    ],
)
def test_expand_hostlist(hostlist, hosts):
    assert expand_hostlist(hostlist) == hosts


@pytest.mark.parametrize("bad", ["n[1-3", "n1-3]", "n[a-b]", "n[3-1]", "n[[1]]"])
def test_expand_hostlist_rejects_malformed(bad):
    with pytest.raises(ValueError):
        expand_hostlist(bad)


@pytest.mark.parametrize(
    "counts, out",
    [("4", [4]), ("4(x3)", [4, 4, 4]), ("4(x2),2", [4, 4, 2]), ("36,72(x2)", [36, 72, 72])],
)
def test_expand_counts(counts, out):
    assert expand_counts(counts) == out


def test_outside_slurm_is_none():
    assert Allocation.from_env({"HOME": "/root", "CUDA_VISIBLE_DEVICES": "0"}) is None


def test_step_on_second_node():
    a = Allocation.from_env(STEP_ENV)
    assert a == Allocation(
        job_id="4711",
        nodes=("n1", "n2", "n3"),
        node_rank=1,
        cpus=4,
        gpus=2,
        step_id="0",
        restart_count=0,
        submit_dir="/home/ada/project",
        local_rank=0,
        tasks_on_node=1,
        mem_mb=1024,
    )
    assert a.num_nodes == 3 and a.hostname == "n2" and a.head_hostname == "n1"
    assert not a.is_head


def test_batch_script_is_head_on_first_node():
    a = Allocation.from_env(BATCH_ENV)
    assert a.node_rank == 0 and a.is_head and a.hostname == "n1"
    assert a.step_id is None and a.restart_count == 2 and a.gpus == 0 and a.cpus == 4
    assert a.mem_mb == 6000  # SLURM_MEM_PER_CPU x CPUs on the node


@pytest.mark.parametrize(
    "mem_env, mem_mb",
    [({}, None), ({"SLURM_MEM_PER_NODE": "0"}, None), ({"SLURM_MEM_PER_NODE": "32000"}, 32000),
     ({"SLURM_MEM_PER_CPU": "700"}, 2800)],
)
def test_memory(mem_env, mem_mb):
    base = {k: v for k, v in STEP_ENV.items() if not k.startswith("SLURM_MEM")}
    assert Allocation.from_env({**base, **mem_env}).mem_mb == mem_mb


def test_step_nodelist_wins_over_job_nodelist():
    env = {**STEP_ENV, "SLURM_JOB_NODELIST": "n[1-4]", "SLURM_STEP_NODELIST": "n[2-3]",
           "SLURM_NODEID": "0", "SLURMD_NODENAME": "n2"}
    a = Allocation.from_env(env)
    assert a.nodes == ("n2", "n3") and a.hostname == "n2"


def test_cpus_from_job_cpus_per_node_by_rank():
    env = {k: v for k, v in STEP_ENV.items() if k != "SLURM_CPUS_ON_NODE"}
    env.update({"SLURM_JOB_CPUS_PER_NODE": "8,4(x2)", "SLURM_NODEID": "0"})
    assert Allocation.from_env(env).cpus == 8
    env["SLURM_NODEID"] = "2"
    assert Allocation.from_env(env).cpus == 4


def test_second_gpu_job_on_the_node_counts_its_own_gpus():
    env = {**STEP_ENV, "CUDA_VISIBLE_DEVICES": "2,3", "SLURM_JOB_GPUS": "2,3",
           "SLURM_STEP_GPUS": "2,3"}
    assert Allocation.from_env(env).gpus == 2


@pytest.mark.parametrize(
    "gpu_env, gpus",
    [
        ({}, 0),
        ({"CUDA_VISIBLE_DEVICES": ""}, 0),
        ({"CUDA_VISIBLE_DEVICES": "0,1,2,3"}, 4),
        ({"CUDA_VISIBLE_DEVICES": "GPU-5f1c2a9e-aaaa,GPU-77d0bb12-bbbb"}, 2),
        ({"CUDA_VISIBLE_DEVICES": "NoDevFiles", "SLURM_GPUS_ON_NODE": "2"}, 2),
        ({"CUDA_VISIBLE_DEVICES": "NoDevFiles", "SLURM_STEP_GPUS": "4,5,6"}, 3),
        ({"CUDA_VISIBLE_DEVICES": "NoDevFiles"}, 0),
        ({"SLURM_JOB_GPUS": "0,1,2"}, 3),
        ({"SLURM_GPUS_ON_NODE": "1"}, 1),
    ],
)
def test_gpu_sources(gpu_env, gpus):
    base = {k: v for k, v in STEP_ENV.items()
            if k not in ("CUDA_VISIBLE_DEVICES", "SLURM_GPUS_ON_NODE", "SLURM_JOB_GPUS",
                         "SLURM_STEP_GPUS")}
    assert Allocation.from_env({**base, **gpu_env}).gpus == gpus


def test_two_tasks_per_node_is_visible():
    env = {**STEP_ENV, "SLURM_STEP_TASKS_PER_NODE": "2(x3)", "SLURM_LOCALID": "1"}
    a = Allocation.from_env(env)
    assert a.tasks_on_node == 2 and a.local_rank == 1


def test_old_style_variables():
    env = {"SLURM_JOBID": "17", "SLURM_NODELIST": "c[5-6]", "SLURM_NODEID": "1",
           "SLURM_CPUS_ON_NODE": "2"}
    a = Allocation.from_env(env)
    assert (a.job_id, a.nodes, a.hostname, a.cpus) == ("17", ("c5", "c6"), "c6", 2)


@pytest.mark.parametrize(
    "bad, names",
    [
        ({"SLURM_JOB_NODELIST": "n[1-3", "SLURM_STEP_NODELIST": "n[1-3"}, "SLURM_STEP_NODELIST"),
        ({"SLURM_NODEID": "5"}, "SLURM_NODEID"),
        ({"SLURM_NODEID": "x"}, "SLURM_NODEID"),
        ({"SLURM_RESTART_COUNT": "one"}, "SLURM_RESTART_COUNT"),
    ],
)
def test_inconsistent_env_raises_cluster_error(bad, names):
    with pytest.raises(ClusterError, match=names):
        Allocation.from_env({**STEP_ENV, **bad})


def test_job_id_without_nodelist_raises():
    with pytest.raises(ClusterError, match="SLURM_JOB_NODELIST"):
        Allocation.from_env({"SLURM_JOB_ID": "5"})


def test_frozen():
    a = Allocation.from_env(STEP_ENV)
    with pytest.raises(AttributeError):
        a.cpus = 8
