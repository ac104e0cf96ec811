"""What is built before a job arrives: the process's service (``service_holder``), the
job process's prewarm (``job_process``), the local VAD and end-of-turn models
(``local_models``) and the PROCESS forkserver's preload (``forkserver``)."""
