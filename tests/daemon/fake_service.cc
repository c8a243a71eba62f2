// The program a Sleeper with an executable of its own runs (fake_segment.h): tests copy it
// under the name they want hakmemd to read from /proc/<pid>/exe. Says it is up, then
// serves the Sleeper's requests on the descriptor named by its argument.
#include "fake_segment.h"

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  const int fd = atoi(argv[1]);
  const char up = 'r';
  if (write(fd, &up, 1) != 1) return 1;
  hakmem_test::Sleeper::serve(fd);
}
