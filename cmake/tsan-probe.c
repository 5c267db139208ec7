/* Built in TSan trees only: `make test-tsan` runs it to learn whether TSan
 * works on this kernel as is, or needs ASLR off (setarch -R). */
#include <pthread.h>
#include <stdio.h>

static int shared;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

static void *work(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&mu);
    shared++;
    pthread_mutex_unlock(&mu);
    return NULL;
}

int main(void)
{
    pthread_t t;
    if (pthread_create(&t, NULL, work, NULL) != 0)
        return 1;
    work(NULL);
    pthread_join(t, NULL);
    printf("tsan probe: ok (%d)\n", shared);
    return shared == 2 ? 0 : 1;
}
