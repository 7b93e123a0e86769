/* Checks the transpose kernels without Python (links with the Python symbols left unresolved, which
 * this never calls): used by scripts/check-transpose-arm to run the NEON kernels under qemu. */
#include "../../alpaca_server/_transpose.c"
#include <stdio.h>
#include <stdlib.h>
int main(void) {
  int bad = 0;
  ptrdiff_t shapes[][2] = {{1,1},{8,8},{9,17},{1031,45},{2051,70},{33,1029}};
  for (unsigned k = 0; k < sizeof shapes / sizeof shapes[0]; k++) {
    ptrdiff_t R = shapes[k][0], C = shapes[k][1], P = C + 3;  /* pitch wider than the row */
    uint16_t *a = malloc(R*P*2), *o = malloc(R*C*2);
    uint8_t *a8 = malloc(R*P), *o8 = malloc(R*C);
    for (ptrdiff_t i = 0; i < R*P; i++) { a[i] = (uint16_t)(i * 2654435761u >> 7); a8[i] = (uint8_t)(i * 2654435761u >> 11); }
    for (int simd = 0; simd < 2; simd++) {
      swap_u16(a, o, R, P, 0, C, simd);
      swap_u8(a8, o8, R, P, 0, C, simd);
      for (ptrdiff_t y = 0; y < R; y++) for (ptrdiff_t x = 0; x < C; x++) {
        if (o[x*R+y] != a[y*P+x]) bad++;
        if (o8[x*R+y] != a8[y*P+x]) bad++;
      }
    }
    free(a); free(o); free(a8); free(o8);
  }
  printf("kernel %s, mismatches %d\n", KERNEL_NAME, bad);
  return bad != 0;
}
