"""What is built before a job arrives: the job process's prewarm (``job_process``: this
process's service, from ``agent.service_holder``), the local VAD and end-of-turn models
(``local_models``) and the PROCESS forkserver's preload (``forkserver``)."""
