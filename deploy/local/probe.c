/*
 * skiff-probe: tries one thing a container should (or should not) be able
 * to do, and prints the outcome on one line: "ok" or "errno=NAME". Built
 * statically by deploy/local/build-image.sh into the sample image as
 * /usr/local/bin/skiff-probe (and beside it, for the host-side controls of
 * the isolation tests). Exit status: 0 when the call succeeded, 1 when it
 * failed, 2 on bad usage.
 *
 *   skiff-probe ptrace-own        attach to a child of the same user
 *   skiff-probe ptrace-other-uid  attach to a child that switched to uid 65534
 *   skiff-probe raw-socket        socket(AF_INET, SOCK_RAW, IPPROTO_ICMP)
 *   skiff-probe init-module       init_module() with an empty image
 *   skiff-probe finit-module      finit_module() on /dev/null
 *   skiff-probe userns            unshare(CLONE_NEWUSER)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static int outcome(long rc) {
	if (rc >= 0) {
		puts("ok");
		return 0;
	}
	printf("errno=%s\n", strerrorname_np(errno) ? strerrorname_np(errno) : "?");
	return 1;
}

/* Forks a child that (as uid, when uid >= 0) waits to be traced; attaches. */
static int ptrace_child(int uid) {
	int ready[2];
	if (pipe(ready) != 0)
		return outcome(-1);
	pid_t child = fork();
	if (child < 0)
		return outcome(-1);
	if (child == 0) {
		if (uid >= 0 && (setgid(uid) != 0 || setuid(uid) != 0))
			_exit(3);
		close(ready[0]);
		if (write(ready[1], "x", 1) != 1)
			_exit(4);
		pause();
		_exit(0);
	}
	close(ready[1]);
	char c;
	if (read(ready[0], &c, 1) != 1) {
		puts("child failed to start");
		return 2;
	}
	long rc = ptrace(PTRACE_ATTACH, child, 0, 0);
	int saved = errno;
	if (rc == 0)
		waitpid(child, NULL, 0);
	kill(child, SIGKILL);
	waitpid(child, NULL, 0);
	errno = saved;
	return outcome(rc);
}

int main(int argc, char **argv) {
	if (argc != 2) {
		fputs("usage: skiff-probe ptrace-own|ptrace-other-uid|raw-socket|init-module|finit-module|userns\n",
		      stderr);
		return 2;
	}
	const char *what = argv[1];
	if (strcmp(what, "ptrace-own") == 0)
		return ptrace_child(-1);
	if (strcmp(what, "ptrace-other-uid") == 0)
		return ptrace_child(65534);
	if (strcmp(what, "raw-socket") == 0)
		return outcome(socket(AF_INET, SOCK_RAW, IPPROTO_ICMP));
	if (strcmp(what, "init-module") == 0) {
		static char image[64];
		return outcome(syscall(SYS_init_module, image, sizeof image, ""));
	}
	if (strcmp(what, "finit-module") == 0) {
		int fd = open("/dev/null", O_RDONLY);
		return outcome(syscall(SYS_finit_module, fd, "", 0));
	}
	if (strcmp(what, "userns") == 0)
		return outcome(unshare(CLONE_NEWUSER));
	fprintf(stderr, "skiff-probe: unknown probe %s\n", what);
	return 2;
}
