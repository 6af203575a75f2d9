/* A tiny KVM guest for recording real kvm:* events: one vCPU in real mode writes N bytes to port 0x3f8
 * (each OUT is a VM-exit to user space), touches unmapped memory once (an MMIO exit), then HLTs.
 * usage: kvm_tiny [n_out=64] */
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

int main(int argc, char **argv) {
  int n = argc > 1 ? atoi(argv[1]) : 64;
  const unsigned char code[] = {
    0xba, 0xf8, 0x03,             /* mov dx, 0x3f8 */
    0xb9, (unsigned char)n, (unsigned char)(n >> 8), /* mov cx, n */
    0xee,                         /* L: out dx, al */
    0xfe, 0xc0,                   /* inc al */
    0xe2, 0xfb,                   /* loop L */
    0xa2, 0x00, 0x80,             /* mov [0x8000], al  (unmapped: MMIO exit) */
    0xf4,                         /* hlt */
  };
  int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (kvm < 0) { perror("/dev/kvm"); return 1; }
  int vm = ioctl(kvm, KVM_CREATE_VM, 0);
  if (vm < 0) { perror("KVM_CREATE_VM"); return 1; }
  unsigned char *mem = mmap(NULL, 0x1000, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  memcpy(mem, code, sizeof code);
  struct kvm_userspace_memory_region region = {.slot = 0, .guest_phys_addr = 0x1000, .memory_size = 0x1000,
                                               .userspace_addr = (unsigned long)mem};
  if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0) { perror("KVM_SET_USER_MEMORY_REGION"); return 1; }
  int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
  if (vcpu < 0) { perror("KVM_CREATE_VCPU"); return 1; }
  int run_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
  struct kvm_run *run = mmap(NULL, run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
  struct kvm_sregs sregs;
  ioctl(vcpu, KVM_GET_SREGS, &sregs);
  sregs.cs.base = 0; sregs.cs.selector = 0;
  ioctl(vcpu, KVM_SET_SREGS, &sregs);
  struct kvm_regs regs = {.rip = 0x1000, .rax = 0, .rflags = 0x2};
  ioctl(vcpu, KVM_SET_REGS, &regs);
  int outs = 0, mmio = 0;
  for (;;) {
    if (ioctl(vcpu, KVM_RUN, 0) < 0) { perror("KVM_RUN"); return 1; }
    if (run->exit_reason == KVM_EXIT_IO) { outs++; continue; }
    if (run->exit_reason == KVM_EXIT_MMIO) { mmio++; continue; }
    if (run->exit_reason == KVM_EXIT_HLT) break;
    fprintf(stderr, "unexpected exit reason %d\n", run->exit_reason);
    return 1;
  }
  printf("kvm_tiny: %d port writes, %d mmio, then hlt\n", outs, mmio);
  return 0;
}
