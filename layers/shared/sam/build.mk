# How `sam build` builds the shared layer and the five functions (template.yaml: `BuildMethod:
# makefile`): the pinned wheels for the Lambda architecture, the code, and its bytecode, compiled
# for the runtime's Python so that a cold start reads modules instead of compiling them.
#
# sam build runs `make --makefile <ContextPath>/Makefile build-<LogicalId>` in a copy of the
# resource's code folder (ContentUri, CodeUri), with ARTIFACTS_DIR naming the output folder. It
# tells the Makefile nothing of the architecture, so each architecture has its own small Makefile
# (sam/arm64/Makefile, sam/x86_64/Makefile: the template's ContextPath picks one from the
# Architecture parameter) which sets LAMBDA_ARCH and includes this file. This file sits inside the
# layer's folder on purpose: a cached `sam build` rebuilds the layer when its folder changes.

# The interpreter sam build's python3.11 builder used: python3.11 on PATH, with pip.
PYTHON ?= python3.11

# The wheels sam build's python3.11 builder asks pip for (aws-lambda-builders, python_pip): those
# for the function's instruction set tagged manylinux2014 / manylinux_2_17 (pip adds manylinux2010
# and manylinux1 on x86_64), which the runtime's glibc (2.26, Amazon Linux 2) loads. Nothing is
# built from an sdist: every pinned package ships such wheels.
PLATFORMS_arm64 := manylinux2014_aarch64 manylinux_2_17_aarch64
PLATFORMS_x86_64 := manylinux2014_x86_64 manylinux_2_17_x86_64
PLATFORMS := $(PLATFORMS_$(LAMBDA_ARCH))
ifeq ($(strip $(PLATFORMS)),)
$(error LAMBDA_ARCH must be arm64 or x86_64, not '$(LAMBDA_ARCH)')
endif

PIP_INSTALL = $(PYTHON) -m pip install --disable-pip-version-check --no-input --quiet --no-compile \
	--no-warn-conflicts --root-user-action=ignore \
	--only-binary=:all: --implementation cp --python-version 3.11 --abi cp311 \
	$(addprefix --platform ,$(PLATFORMS))

# unchecked-hash: the runtime loads the bytecode without comparing it with its source. Timestamp
# bytecode would never match: the deployment zip keeps no modification times (sam package writes
# 1980-01-01 for every file), so every cold start would compile the module again, and could not
# even write the result (/var/task and /opt are read-only). -f: bytecode a wheel shipped is made
# again the same way. -d: the path the code runs from in Lambda is compiled in, not this build's
# temporary folder, so the same code gives the same bytes from one build to the next.
COMPILE = $(PYTHON) -m compileall -q -f -j 0 --invalidation-mode unchecked-hash

# The runtime's Python reads only bytecode of its own minor version (cpython-311).
CHECK_PYTHON = $(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11) and "$(PYTHON) is not Python 3.11")'

# A function's or the layer's requirements, when the file lists any (a function's lists none).
define install_requirements
	if grep -qvE '^[[:space:]]*(#|$$)' requirements.txt; then \
		$(PIP_INSTALL) --target "$(1)" --requirement requirements.txt && rm -rf "$(1)/bin"; \
	fi
endef

FUNCTIONS := ApiFunction DispatcherFunction DispatchDlqFunction SweeperFunction DlqRetryFunction FollowFunction

.PHONY: build-SharedLayer $(addprefix build-,$(FUNCTIONS))

# The layer: python/ holds the dependencies (pip's console scripts in bin/ name this machine's
# interpreter: left out) and the workflows package, without the bytecode of the working tree.
build-SharedLayer:
	@$(CHECK_PYTHON)
	mkdir -p "$(ARTIFACTS_DIR)/python"
	$(call install_requirements,$(ARTIFACTS_DIR)/python)
	cp -R workflows requirements.txt "$(ARTIFACTS_DIR)/python/"
	find "$(ARTIFACTS_DIR)/python/workflows" -name __pycache__ -prune -exec rm -rf {} +
	$(COMPILE) -d /opt/python "$(ARTIFACTS_DIR)/python"

# A function: its folder (app.py, requirements.txt) as it is, without the working tree's bytecode.
$(addprefix build-,$(FUNCTIONS)):
	@$(CHECK_PYTHON)
	cp -R . "$(ARTIFACTS_DIR)/"
	find "$(ARTIFACTS_DIR)" -name __pycache__ -prune -exec rm -rf {} +
	$(call install_requirements,$(ARTIFACTS_DIR))
	$(COMPILE) -d /var/task "$(ARTIFACTS_DIR)"
